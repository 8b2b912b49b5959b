"""Progress of long work: a live bar on a terminal, plain lines in logs, nothing when switched off.

A scheduler job, ``| tee`` or a log file is not a terminal: a redrawn bar would either show nothing until the end
or flood the log. There, :class:`Progress` prints one line every ``every`` of the work (10 %) or ``seconds``
(30 s), whichever comes first, with the count done, the rate and the time left.

hsikit's one progress reporter: tiled inference, preprocessing, batches, Sentinel-2 stacks and series, dataset
downloads (``unit="bytes"``, with a total that may be unknown) all report through it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


#: the unit whose counts are shown as sizes (kB, MB, GB) and whose rate is a transfer speed
BYTES = "bytes"


def _clock(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _size(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as rich's download bar)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - unreachable


class Progress:
    """Progress over ``total`` steps of ``unit`` (tiles, windows, scenes…) labelled ``label``.

    ``advance(n, pixels=…, skipped=…, note=…)`` after each step; pixels give a Mpx/s rate, skipped steps are
    counted, and ``note`` (e.g. the latest training loss) is shown beside the count.
    ``unit="bytes"`` (:data:`BYTES`) shows sizes and a transfer speed (downloads); ``total=None`` is an unknown
    total (no percentage: plain lines every ``seconds`` only). ``live`` forces the bar (True) or plain lines
    (False); default: a bar when ``stream`` is a terminal. ``transient`` clears the bar when done (the caller prints
    its own result line); plain lines always end with a closing line.
    """

    def __init__(self, enabled: bool, total: int | None, label: str, *, unit: str = "tiles",
                 stream: TextIO | None = None, live: bool | None = None, every: float = 0.1, seconds: float = 30.0,
                 transient: bool = False) -> None:
        self.enabled, self.label, self.unit = bool(enabled), label, unit
        self.total = None if total is None else max(int(total), 0)
        self.transient = transient
        self.stream = stream if stream is not None else sys.stderr
        self.live = live if live is not None else _is_terminal(self.stream)
        self.every, self.seconds = every, seconds
        self.done = self.px = self.skipped = 0
        self.note = ""
        self.t0 = self._last_t = time.perf_counter()
        self._last_frac = 0.0
        self._bar = None

    # -- context -----------------------------------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        self.t0 = self._last_t = time.perf_counter()
        if self.enabled and self.live:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            from rich.progress import Progress as RichProgress

            if self.unit == BYTES:
                columns = (DownloadColumn(), TransferSpeedColumn())
            else:
                columns = (MofNCompleteColumn(), TextColumn(f"{self.unit}  {{task.fields[extra]}}"))
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), *columns, TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=self.transient)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, extra="")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None
        elif exc_type is None and self.done:
            elapsed = time.perf_counter() - self.t0
            self._line(f"{self.label}: done, {self._count(self.done)} in {elapsed:.1f} s{self._rate(elapsed)}")

    # -- reporting ---------------------------------------------------------------------------------------------
    def advance(self, n: int = 1, *, pixels: int = 0, skipped: bool = False, note: str | None = None) -> None:
        self.done += int(n)
        if note is not None:
            self.note = note
        self.px += int(pixels)
        self.skipped += int(skipped)
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        if self._bar is not None:
            extra = self._rate(elapsed).lstrip(", ")
            if self.skipped:
                extra += f"  {self.skipped} skipped"
            if self.note:
                extra += f"  {self.note}"
            self._bar.update(self._task, advance=n, extra=extra)
            return
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        skipped += f", {self.note}" if self.note else ""
        if self.total is None:  # unknown total: a line every `seconds`
            if now - self._last_t >= self.seconds:
                self._last_t = now
                self._line(f"{self.label}: {self._count(self.done)}{skipped}{self._rate(elapsed)}")
            return
        frac = self.done / self.total if self.total else 1.0
        if self.done >= self.total or frac - self._last_frac >= self.every - 1e-9 or now - self._last_t >= self.seconds:
            self._last_frac, self._last_t = frac, now
            if self.done >= self.total:
                return  # the closing line says it
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            if self.unit == BYTES:
                count = f"{_size(self.done)} of {_size(self.total)}"
            else:
                count = f"{self.done}/{self.total} {self.unit}"
            self._line(f"{self.label}: {100 * frac:.0f} % ({count}{skipped}){self._rate(elapsed)}, "
                       f"{_clock(left)} left")

    def _count(self, n: int) -> str:
        return _size(n) if self.unit == BYTES else f"{n} {self.unit}"

    def _rate(self, elapsed: float) -> str:
        if self.unit == BYTES:
            return f", {_size(self.done / max(elapsed, 1e-9))}/s" if self.done else ""
        return f", {self.px / 1e6 / max(elapsed, 1e-9):.2f} Mpx/s" if self.px else ""

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
