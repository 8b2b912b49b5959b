"""Atomic outputs: write under a temporary name in the target directory, rename when complete.

Temporary names carry their owner: ``.{name}.{pid}-{host}.{random}.tmp{suffix}`` (``host`` a short hash of the
host name). A process killed outright (SIGKILL, power loss) cannot remove its temporaries, so every run that
targets an output first removes the temporaries of earlier runs for that output whose owner is gone
(:func:`remove_stale_temps`); a live owner's, e.g. a concurrent run's, are never touched.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hsikit.errors import OutputError

# sidecars GDAL may create next to a raster (the COG driver builds overviews in ".ovr.tmp" files while copying)
_SIDECARS = (".aux.xml", ".ovr", ".msk", ".ovr.tmp", ".msk.ovr.tmp")
#: temporaries named before owners were recorded (``.{name}.{random}.tmp{suffix}``) count as leftovers once
#: untouched this long; no run keeps a temporary that long without writing to it
_UNOWNED_STALE_S = 24 * 3600


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


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    # a pid only identifies a process on its own host (or container), e.g. on a shared network folder
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def temp_path(final: Path, directory: str | Path | None = None) -> Path:
    """A hidden, unique temporary name beside ``final`` (same filesystem, so rename is atomic), or in
    ``directory`` (which must be on the same filesystem, e.g. a work folder inside the output folder).

    The name records the owning process (see the module docstring)."""
    final = Path(final)
    name = f".{final.name}.{os.getpid()}-{_host_tag()}.{secrets.token_hex(4)}.tmp{final.suffix}"
    return Path(directory) / name if directory is not None else final.with_name(name)


def _temp_pattern(final: Path) -> re.Pattern[str]:
    """Temporary names of ``final`` (with or without an owner) and their GDAL sidecars."""
    sidecars = "|".join(re.escape(s) for s in _SIDECARS)
    return re.compile(rf"^\.{re.escape(final.name)}\.(?:(\d+)-([0-9a-f]{{6}})\.)?[0-9a-f]{{8}}"
                      rf"\.tmp{re.escape(final.suffix)}(?:{sidecars})?$")


def _started(pid: int) -> float | None:
    """When process ``pid`` of this host started (0.0 when that cannot be read), or None if it has ended."""
    import psutil

    if pid == os.getpid():
        return 0.0
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except (psutil.AccessDenied, OSError):
        return 0.0


def remove_stale_temps(final: str | Path, directory: str | Path | None = None) -> list[Path]:
    """Remove the temporaries (and their GDAL sidecars) of ``final`` left by runs whose process is gone; return
    what was removed. They are looked for beside ``final``, or in ``directory`` (a ``temp_dir``).

    Temporaries of live processes and of processes on other hosts are kept; unowned ones (older hsikit) only when
    untouched for a day."""
    final = Path(final)
    folder = Path(directory) if directory is not None else (final.parent if str(final.parent) else Path("."))
    prefix, pattern = f".{final.name}.", _temp_pattern(final)
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return []
    started: dict[int, float | None] = {}
    removed = []
    for entry in entries:
        m = pattern.match(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        pid, host = m.group(1), m.group(2)
        if pid is None:
            stale = time.time() - st.st_mtime > _UNOWNED_STALE_S
        elif host != _host_tag():
            stale = False
        else:
            key = int(pid)
            if key not in started:
                started[key] = _started(key)
            # a process that started after the file was last written reuses the owner's pid
            stale = started[key] is None or started[key] > st.st_mtime + 1.0
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
            except OSError:  # not ours to remove (permissions): leave it
                pass
    return removed


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
    mid-write leaves nothing beside the outputs. Temporaries of earlier, killed runs for the same outputs are
    removed first (:func:`remove_stale_temps`).
    """
    finals = [Path(f) for f in finals]
    for f in finals:
        check_output(f, overwrite)
    for f in finals:
        remove_stale_temps(f)
        if temp_dir is not None:
            remove_stale_temps(f, temp_dir)
    temps = {f: temp_path(f, temp_dir) for f in finals}
    try:
        yield temps
    except BaseException:
        for t in temps.values():
            remove_with_sidecars(t)
        raise
    group = _GROUP.get()
    if group is not None:  # the group renames them with the run's other outputs
        group.pending.append((finals, temps))
        return
    _commit([(finals, temps)])


class OutputGroup:
    """Outputs of one run, renamed into place together when the run completes (see :func:`output_group`)."""

    def __init__(self) -> None:
        self.pending: list[tuple[list[Path], dict[Path, Path]]] = []

    def staged(self, final: str | Path) -> Path:
        """Where the finished, not yet renamed ``final`` lies now (its own path once committed)."""
        final = Path(final)
        for _, temps in self.pending:
            if final in temps:
                return temps[final]
        return final


_GROUP: contextvars.ContextVar[OutputGroup | None] = contextvars.ContextVar("hsikit_output_group", default=None)


@contextmanager
def output_group() -> Iterator[OutputGroup]:
    """Hold back the renames of every atomic output finished inside, and do them all at the end.

    A run that writes several files (class map, probabilities, quicklook …) then never leaves some of them
    without the others: an error or interrupt before the end removes every temporary, and the renames
    themselves are quick and shielded from SIGINT/SIGTERM. Groups do not nest: an inner one joins the outer.
    """
    outer = _GROUP.get()
    if outer is not None:
        yield outer
        return
    group = OutputGroup()
    token = _GROUP.set(group)
    try:
        yield group
    except BaseException:
        for _, temps in group.pending:
            for t in temps.values():
                remove_with_sidecars(t)
        raise
    finally:
        _GROUP.reset(token)
    _commit(group.pending)


def _commit(batches: list[tuple[list[Path], dict[Path, Path]]]) -> None:
    """Rename finished temporaries into place, each batch's main file last; signals wait until all are done."""
    with _signals_held():
        for finals, temps in batches:
            for f in reversed(finals):
                t = temps[f]
                if t.exists():
                    os.replace(t, f)
            for t in temps.values():
                remove_with_sidecars(t)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT/SIGTERM (main thread only) until the block ends, then deliver them: a rename sequence
    interrupted half-way would leave some outputs of a run without the others."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (None, signal.SIG_IGN)]
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if got:
            signal.raise_signal(got[0])
