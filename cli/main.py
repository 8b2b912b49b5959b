"""`hsikit` command-line entry point.

Every command is a thin wrapper over a documented Python function (``hsikit.classify``, ``hsikit.scene_info`` …).
Heavy libraries (torch, the models) are imported inside the commands so ``hsikit --help`` stays fast.
"""

from __future__ import annotations

import signal
import sys
import warnings
from typing import Any

import typer

# each command module registers its commands on the app
from hsikit.cli import batch, classify, export, foundation, restoration, scene, sentinel2, stress  # noqa: F401
from hsikit.cli.app import app, plain_help
from hsikit.cli.options import param_name
from hsikit.cli.state import NOTHING_WRITTEN, state
from hsikit.errors import HsikitError

plain_help(app)


# -- entry point ---------------------------------------------------------------------------------------------------
def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _default_option_values(args: list[str]) -> list[str]:
    """``--probabilities`` given without a value means float32 (``--probabilities uint8`` picks the compact form)."""
    out = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--probabilities" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("float32")
    return out


def _usage_line(e: Exception, args: list[str]) -> str:
    """A click/typer usage error in one line: the option (with the value given) or argument, and what is wrong."""
    def sentence(text: str) -> str:  # "Input should be ..." -> "input should be ..."
        text = " ".join(text.split()).removeprefix("Value error, ")
        return text[:1].lower() + text[1:] if text[1:2].islower() else text

    param, message = getattr(e, "param", None), str(getattr(e, "message", "") or "")
    if param is None or not message or type(e).__name__ == "MissingParameter":
        return sentence(e.format_message())
    name = param_name(param)
    given = [v for o in param.opts for i, a in enumerate(args[:-1]) if a == o for v in [args[i + 1]]]
    given += [a.split("=", 1)[1] for o in param.opts for a in args if a.startswith(o + "=")]
    if getattr(param, "param_type_name", "") != "argument" and given and given[-1] not in message:
        name = f"{name} {given[-1]}"
    return f"{name}: {sentence(message)}"


def _catch_signals() -> tuple[list[int], dict[int, Any]]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so a scheduler's SIGTERM cleans up like
    Ctrl-C. Returns the list the caught signals go to and the handlers to restore."""
    caught: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        first = not caught
        caught.append(signum)
        if first:  # a second signal must not break the clean-up the first one started
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a background job stays ignored
                previous[sig] = signal.signal(sig, interrupt)
        except ValueError:  # not the main thread: leave signals alone
            break
    return caught, previous


def run(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors print one line and exit 2; ``--debug`` shows tracebacks. An interrupt
    (SIGINT, SIGTERM) prints one line and exits 130 or 143."""
    args = _default_option_values(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    if not debug:
        warnings.showwarning = _warn_one_line
    state["interrupted"] = NOTHING_WRITTEN
    caught, previous = _catch_signals()
    interrupted = False
    try:
        code = _invoke(args, debug)
    except KeyboardInterrupt:  # one that typer did not turn into exit code 130 (caught is empty off the main thread)
        code, interrupted = 130, True
    except SystemExit:
        if not caught:  # a SystemExit of another origin keeps its meaning
            raise
        code = 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if caught or interrupted:
        print(f"interrupted: {state['interrupted']}", file=sys.stderr)
        code = 128 + (caught[0] if caught else int(signal.SIGINT))
    return _finish(argv, code)


def _invoke(args: list[str], debug: bool) -> int:
    """Run the command line; the exit code, with a user error printed as one line. Lightning answers an interrupt
    with SystemExit(1), which the caller handles."""
    try:
        # with standalone_mode=False click returns a command's typer.Exit code instead of raising it
        ret = app(args=args, prog_name="hsikit", standalone_mode=False)
        return ret if isinstance(ret, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except HsikitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        usage = hasattr(e, "format_message") and hasattr(e, "exit_code")  # click/typer usage errors
        if usage and type(e).__name__ == "NoArgsIsHelpError":  # a group given no command: its help
            e.show()
            return e.exit_code
        if debug:
            raise
        if usage:
            print(f"error: {_usage_line(e, args)}", file=sys.stderr)
            return e.exit_code
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {msg} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _finish(argv: list[str] | None, code: int) -> int:
    if argv is None:
        sys.exit(code)
    return code
