"""Atomic outputs: write under a temporary name in the target directory, rename when complete."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hsikit.errors import OutputError

# sidecars GDAL may create next to a raster
_SIDECARS = (".aux.xml", ".ovr", ".msk")


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output (unless ``overwrite``) or a directory that does not exist or cannot be written."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(f"output exists: {p} (use --overwrite to replace it)")
    if p.exists() and p.is_dir():
        raise OutputError(f"output {p} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    return p


def temp_path(final: Path, directory: str | Path | None = None) -> Path:
    """A hidden, unique temporary name beside ``final`` (same filesystem, so rename is atomic), or in
    ``directory`` (which must be on the same filesystem, e.g. a work folder inside the output folder)."""
    final = Path(final)
    name = f".{final.name}.{secrets.token_hex(4)}.tmp{final.suffix}"
    return Path(directory) / name if directory is not None else final.with_name(name)


def remove_with_sidecars(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + s) for s in _SIDECARS)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_outputs(finals: list[Path], overwrite: bool,
                   temp_dir: str | Path | None = None) -> Iterator[dict[Path, Path]]:
    """Yield {final: temp}; on success rename every temp to its final name, on any error remove the temps.

    The first path is the main file and is renamed last, so a reader that finds it finds its sidecars too.
    ``temp_dir`` keeps the temporaries out of the output folder (same filesystem), e.g. so that a process killed
    mid-write leaves nothing beside the outputs.
    """
    finals = [Path(f) for f in finals]
    for f in finals:
        check_output(f, overwrite)
    temps = {f: temp_path(f, temp_dir) for f in finals}
    try:
        yield temps
    except BaseException:
        for t in temps.values():
            remove_with_sidecars(t)
        raise
    for f in reversed(finals):
        t = temps[f]
        if t.exists():
            os.replace(t, f)
    for t in temps.values():
        remove_with_sidecars(t)
