"""Build the QGIS plugin zip (``make qgis-plugin``): ``hsikit_qgis/`` with its metadata version set to hsikit's and
``options.json``, the inference commands' options exported from their one declaration
(:mod:`hsikit.pipelines.options`), from which the plugin builds its Processing parameters.

Run with hsikit's Python: ``.venv/bin/python qgis/build_plugin.py [--out dist/hsikit_qgis.zip]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

PLUGIN = "hsikit_qgis"
SOURCE = Path(__file__).resolve().parent / PLUGIN
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "dist" / f"{PLUGIN}.zip"
# fixed entry times make the zip the same bytes for the same sources
_EPOCH = (2020, 1, 1, 0, 0, 0)


def _type_name(kind: Any) -> str:
    from hsikit.errors import OptionError

    names = {int: "int", float: "float", bool: "bool", str: "str", Path: "path", Tuple[float, float]: "pair"}
    if kind not in names:
        raise OptionError(f"no QGIS parameter type for option type {kind!r}: add it to qgis/build_plugin.py")
    return names[kind]


def _option(opt: Any) -> dict:
    return {"name": opt.name, "flags": list(opt.flags), "type": _type_name(opt.type), "default": opt.default,
            "help": opt.help, "low": opt.low, "choices": list(opt.choices), "check": opt.check,
            "required": opt.required}


def export_options() -> dict:
    """Every inference command's options as JSON: per command its checkpoint option and other options, for the
    single-scene command and for the batch task (its differences applied); options without flags are left out."""
    from hsikit import __version__
    from hsikit.pipelines.options import SPECS

    commands = {}
    for name, spec in SPECS.items():
        model = spec.batch_model()
        commands[name] = {
            "single": [_option(o) for o in spec.single() if o.flags],
            "batch": [_option(o) for o in ([model] if model else []) + spec.batch() if o.flags],
        }
    return {"hsikit_version": __version__, "commands": commands}


def _metadata(version: str) -> str:
    from hsikit.errors import InputError

    text = (SOURCE / "metadata.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    keys = {ln.split("=", 1)[0].strip() for ln in lines if "=" in ln}
    # what QGIS needs to load it; plugins.qgis.org also wants email and repository before publishing
    required = {"name", "qgisMinimumVersion", "description", "about", "version", "author", "hasProcessingProvider"}
    missing = required - keys
    if missing:
        raise InputError(f"{SOURCE / 'metadata.txt'}: missing {', '.join(sorted(missing))}")
    return "\n".join(f"version={version}" if ln.startswith("version=") else ln for ln in lines) + "\n"


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the plugin zip to ``out`` (a build product: replaced, through a temporary file renamed when complete)
    and return its path."""
    out = Path(out)
    options = export_options()
    files = sorted(p for p in SOURCE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".pyo") and p.name != "options.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            def add(name: str, data: bytes) -> None:
                info = zipfile.ZipInfo(f"{PLUGIN}/{name}", _EPOCH)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                zf.writestr(info, data)

            for path in files:
                rel = path.relative_to(SOURCE).as_posix()
                data = _metadata(options["hsikit_version"]).encode() if rel == "metadata.txt" else path.read_bytes()
                add(rel, data)
            add("options.json", (json.dumps(options, indent=1, sort_keys=True) + "\n").encode())
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the hsikit QGIS plugin zip.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"zip to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    from hsikit.errors import HsikitError

    try:
        path = build(args.out)
    except (HsikitError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
