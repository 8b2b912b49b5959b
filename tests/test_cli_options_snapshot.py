"""Every command keeps its options: the option set of each command (and each argument) is compared with a snapshot
taken before the CLI's options were shared between commands. Regenerate after a deliberate change with
``python tests/test_cli_options_snapshot.py``."""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("data") / "cli_options.json"


def option_sets() -> dict[str, list[str]]:
    """``{"hsikit classify": ["--batch-size", ..., "SCENE"], ...}`` for every command (groups excluded)."""
    import typer.main

    from hsikit.cli.main import app

    found: dict[str, list[str]] = {}

    def walk(cmd, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is not None:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}")
            return
        names = []
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "argument":
                names.append((p.name or "").upper())
            else:
                names.extend([*p.opts, *p.secondary_opts])
        found[path] = sorted(names)

    walk(typer.main.get_command(app), "hsikit")
    return found


def test_every_command_keeps_its_options():
    expected = json.loads(SNAPSHOT.read_text())
    got = option_sets()
    assert sorted(got) == sorted(expected), "commands added or removed"
    changed = {cmd: {"lost": sorted(set(expected[cmd]) - set(got[cmd])), "new": sorted(set(got[cmd]) - set(expected[cmd]))}
               for cmd in expected if set(got[cmd]) != set(expected[cmd])}
    assert not changed, changed


if __name__ == "__main__":
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(option_sets(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
