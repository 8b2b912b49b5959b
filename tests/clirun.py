"""Running the CLI in-process from tests: exit code, stdout and stderr."""

from __future__ import annotations

from hsikit.cli.main import run


def cli(capsys, *args) -> tuple[int, str, str]:
    """``hsikit ARGS...`` through the console-script entry (one-line errors, exit codes) with captured output."""
    code = run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err
