"""Class legends: names and colours of class-map values."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hsikit.errors import InputError, OptionError

# A qualitative palette (Tableau 20 order, then extras) for classes without a colour of their own.
_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
]


def default_colors(n: int) -> list[str]:
    """``n`` distinct hex colours; cycles through HSV beyond the base palette."""
    import colorsys

    out = list(_PALETTE[:n])
    for i in range(len(out), n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.9)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.strip().lstrip("#")
    if len(c) != 6:
        raise OptionError(f"colour {color!r} is not #rrggbb")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@dataclass(frozen=True)
class Legend:
    """Names and colours of classes 1..K (value v = index + 1; value 0 is nodata)."""

    names: tuple[str, ...]
    colors: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError("legend names and colours differ in length")

    @classmethod
    def from_names(cls, names: Sequence[str], colors: Sequence[str] | None = None) -> "Legend":
        cols = list(colors) if colors else default_colors(len(names))
        return cls(tuple(str(n) for n in names), tuple(cols))

    @property
    def count(self) -> int:
        return len(self.names)

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table: 0 transparent, classes opaque."""
        cmap = {0: (0, 0, 0, 0)}
        for i, c in enumerate(self.colors):
            cmap[i + 1] = (*hex_to_rgb(c), 255)
        return cmap

    @classmethod
    def read(cls, path: str | Path, n_classes: int | None = None) -> "Legend":
        """Read a user legend: JSON (list of {value,name,color}), CSV (value,name,color) or GDAL .clr.

        ``n_classes``: the model's class count; the legend must cover values 1..n_classes.
        """
        p = Path(path)
        if not p.exists():
            raise InputError(f"legend file not found: {p}")
        entries: dict[int, tuple[str, str]] = {}
        try:
            if p.suffix.lower() == ".json":
                for e in json.loads(p.read_text()):
                    entries[int(e["value"])] = (str(e["name"]), str(e["color"]))
            elif p.suffix.lower() == ".clr":
                for line in p.read_text().splitlines():
                    parts = line.split()
                    if len(parts) < 4 or parts[0].startswith("#"):
                        continue
                    v, r, g, b = (int(x) for x in parts[:4])
                    name = " ".join(parts[5:] if len(parts) > 5 else parts[4:]) or f"class {v}"
                    entries[v] = (name, f"#{r:02x}{g:02x}{b:02x}")
            else:
                with p.open(newline="") as f:
                    for row in csv.reader(f):
                        if not row or not row[0].strip().lstrip("-").isdigit():
                            continue
                        entries[int(row[0])] = (row[1].strip(), row[2].strip())
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise InputError(f"cannot parse legend {p.name}: {e}") from None
        entries.pop(0, None)
        if not entries:
            raise InputError(f"legend {p.name} lists no classes")
        k = n_classes if n_classes is not None else max(entries)
        missing = [v for v in range(1, k + 1) if v not in entries]
        if missing:
            raise OptionError(f"legend {p.name} does not cover class values {missing} of the model's 1..{k}")
        for v in range(1, k + 1):
            hex_to_rgb(entries[v][1])
        return cls(tuple(entries[v][0] for v in range(1, k + 1)), tuple(entries[v][1] for v in range(1, k + 1)))
