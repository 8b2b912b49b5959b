"""Run the ``hsikit`` executable as a child process: find it, stream its output line by line, cancel it.

QGIS's Python is not hsikit's virtual environment, so the provider never imports hsikit: it runs the command
line. This module has no QGIS import either (the tests drive it with any Python). hsikit writes plain progress
lines when its output is not a terminal (``scene.tif: 40 % (8/20 tiles), 1.2 Mpx/s, 0:00:03 left``), an error
as one line ``error: ...`` with exit code 2, and exits 130 after an interrupt (SIGINT), its temporaries removed.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

#: environment variable naming the executable when the provider's setting is empty
EXECUTABLE_ENV = "HSIKIT_EXECUTABLE"
#: exit codes of hsikit interrupted by SIGINT and SIGTERM
INTERRUPTED = (130, 143)

# QGIS sets these for its own embedded Python; inherited, they would make the virtualenv's Python import the
# system's (or QGIS's) packages instead of its own.
_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE",
                     "VIRTUAL_ENV")

_PROGRESS = re.compile(r"^(?P<label>.*?): (?P<percent>\d{1,3}) % \(")
_DONE = re.compile(r"^(?P<label>.*?): done[, ]")


class HsikitNotFound(Exception):
    """The hsikit executable is neither configured nor on PATH."""


@dataclass
class Line:
    """One line hsikit wrote: ``stream`` is "stdout" or "stderr"; ``kind`` "progress" (with ``label`` and
    ``percent``), "error", "warning" or "info"; ``text`` the line without its "error: "/"warning: " prefix."""

    stream: str
    text: str
    kind: str = "info"
    label: str = ""
    percent: Optional[float] = None


@dataclass
class Result:
    """How a run ended: the exit code, whether it was cancelled, the error line (if any) and everything written."""

    returncode: int
    cancelled: bool
    error: str = ""
    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """True when hsikit stopped because of SIGINT/SIGTERM (it removed its temporaries)."""
        return self.returncode in INTERRUPTED or self.returncode in (-signal.SIGINT, -signal.SIGTERM)

    def message(self, command: str) -> str:
        """A one-line reason for a failed run: hsikit's own error line, else the last line it wrote."""
        if self.error:
            return self.error
        tail = [s for s in self.stderr + self.stdout if s.strip()]
        last = f": {tail[-1].strip()}" if tail else ""
        return f"hsikit {command} exited with code {self.returncode}{last}"


def find_executable(configured: str = "") -> str:
    """The hsikit executable: ``configured`` (the provider's setting) if given, else ``$HSIKIT_EXECUTABLE``, else
    ``hsikit`` on PATH. Raises :class:`HsikitNotFound` with what to do."""
    for source, value in (("the provider setting", configured), (EXECUTABLE_ENV, os.environ.get(EXECUTABLE_ENV))):
        if value:
            path = os.path.expanduser(value)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
            raise HsikitNotFound(f"hsikit executable {path} (from {source}) does not exist or cannot be run")
    found = shutil.which("hsikit")
    if found:
        return found
    raise HsikitNotFound("hsikit executable not found on PATH: set its path in Processing > Options > Providers > "
                         f"hsikit, or in the environment variable {EXECUTABLE_ENV}")


def child_environment(base: Optional[dict] = None) -> dict:
    """The environment for hsikit: QGIS's Python variables removed, output unbuffered so lines arrive at once."""
    env = dict(os.environ if base is None else base)
    for name in _PYTHON_VARIABLES:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_line(stream: str, raw: str) -> Line:
    """Classify one output line: progress (label and percent), a done line (100 %), an error, a warning or info."""
    text = raw.rstrip("\r\n")
    for prefix, kind in (("error: ", "error"), ("warning: ", "warning")):
        if text.startswith(prefix):
            return Line(stream, text[len(prefix):].strip(), kind)
    m = _PROGRESS.match(text)
    if m:
        return Line(stream, text, "progress", m.group("label"), float(m.group("percent")))
    m = _DONE.match(text)
    if m:
        return Line(stream, text, "progress", m.group("label"), 100.0)
    return Line(stream, text)


def _pump(pipe, name: str, lines: "queue.Queue") -> None:
    try:
        for raw in iter(pipe.readline, ""):
            lines.put((name, raw))
    finally:
        pipe.close()
        lines.put((name, None))


def _default_sigint() -> None:
    """In the child before hsikit starts: SIGINT back to its default, so that hsikit installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen) -> None:
    """Ask hsikit to stop as Ctrl-C would: it removes its temporary files and exits 130."""
    if os.name == "nt":  # no SIGINT for a child on Windows: CTRL_BREAK_EVENT reaches its process group
        proc.send_signal(signal.CTRL_BREAK_EVENT)
    else:
        proc.send_signal(signal.SIGINT)


def run(executable: str, args: Sequence[str], *, on_line: Callable[[Line], None],
        is_cancelled: Callable[[], bool] = lambda: False, poll: float = 0.1, grace: float = 60.0,
        env: Optional[dict] = None) -> Result:
    """Run ``executable args``, calling ``on_line`` for every line it writes (stdout and stderr, as they come).

    When ``is_cancelled()`` turns true the child gets SIGINT and is waited for ``grace`` seconds (then SIGTERM, then
    SIGKILL), so that it removes its temporaries; the result then says ``cancelled``."""
    flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if os.name == "nt" else 0
    # an ignored SIGINT (QGIS started from a background shell) would be inherited, and cancel would not reach hsikit
    reset = None if os.name == "nt" else _default_sigint
    proc = subprocess.Popen([executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
                            env=child_environment() if env is None else env, creationflags=flags, preexec_fn=reset)
    lines: "queue.Queue" = queue.Queue()
    readers = [threading.Thread(target=_pump, args=(pipe, name, lines), daemon=True)
               for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for t in readers:
        t.start()
    result = Result(returncode=0, cancelled=False)
    open_streams, stop_sent, escalated, exited = 2, 0.0, 0, 0.0
    # a process it started (a Dask worker) may hold the pipes open a while after hsikit itself has exited
    while (open_streams or proc.poll() is None) and not (exited and time.monotonic() - exited > 5.0):
        try:
            name, raw = lines.get(timeout=poll)
        except queue.Empty:
            name, raw = None, None
        if name is not None and raw is None:
            open_streams -= 1
        elif raw is not None:
            (result.stdout if name == "stdout" else result.stderr).append(raw.rstrip("\r\n"))
            line = parse_line(name, raw)
            if line.kind == "error":
                result.error = line.text
            on_line(line)
        running = proc.poll() is None
        if not running:
            exited = exited or time.monotonic()
        elif not result.cancelled and is_cancelled():
            result.cancelled, stop_sent = True, time.monotonic()
            _interrupt(proc)
        elif result.cancelled and escalated < 2 and time.monotonic() - stop_sent > grace + 10 * escalated:
            (proc.terminate, proc.kill)[escalated]()
            escalated += 1
    result.returncode = proc.wait()
    return result
