"""The state of one ``hsikit`` invocation, set by the top-level options and read by the commands."""

from __future__ import annotations

NOTHING_WRITTEN = "nothing was written"

#: ``debug`` (--debug), ``progress`` (not --quiet), and ``interrupted``: what an interrupted command leaves behind
#: (commands that keep partial work say so)
state = {"debug": False, "progress": True, "interrupted": NOTHING_WRITTEN}
