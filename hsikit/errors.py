"""User-facing errors.

Every error a user can cause (missing file, not a raster, band mismatch, bad option, existing output) is a
subclass of :class:`HsikitError`. Its message is one line that says what is wrong and, where possible, what to do.
The CLI prints that line and exits non-zero; anything else is a bug and shows a traceback with ``--debug``.
"""

from __future__ import annotations


class HsikitError(Exception):
    """Base class of errors caused by user input; the message is a single line."""

    exit_code = 2


class InputError(HsikitError):
    """An input file is missing, unreadable or not a raster/vector of the expected kind."""


class BandMismatchError(HsikitError):
    """The scene's bands do not match what a model or preprocessing chain expects."""


class OutputError(HsikitError):
    """An output exists (and ``overwrite`` is off), or its directory cannot be written."""


class OptionError(HsikitError):
    """An option value is invalid or options contradict each other."""
