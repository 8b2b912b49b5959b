"""The ``hsikit`` command groups and how their help reads: click's plain formatter (wrapping at the terminal's
width without splitting option names), and the shared ``--threads`` option every compute command gets.

Command modules register their commands on :data:`app` and :data:`train_app`; :mod:`hsikit.cli.main` imports
them all and runs the command line.
"""

from __future__ import annotations

import functools
import shutil
import textwrap
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from hsikit._version import __version__
from hsikit.cli.datasets import app as datasets_app  # no torch import
from hsikit.cli.state import state


# -- help layout ---------------------------------------------------------------------------------------------------
def wrap(text: str, width: int, indent: str = "") -> str:
    """Paragraphs of ``text`` filled to ``width``; unlike click's wrapper, words are never split at their hyphens,
    so option and model names (--drop-bad-bands, spectral-cnn) stay whole."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n\n".join(textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent,
                                     break_on_hyphens=False) for p in paragraphs if p)


class _HelpFormatter(typer.Context.formatter_class):  # click's plain formatter: it wraps where rich truncates
    def write_text(self, text: str) -> None:
        self.write(wrap(text, self.width, " " * self.current_indent) + "\n")

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first = min(max((len(term) for term, _ in rows), default=0), col_max) + col_spacing
        hang = " " * (self.current_indent + first)
        for term, text in rows:
            self.write(" " * self.current_indent + term)
            if not text:
                self.write("\n")
                continue
            self.write(" " * (first - len(term)) if len(term) <= first - col_spacing else "\n" + hang)
            lines = wrap(text, max(self.width - first - 2, 10)).splitlines() or [""]
            self.write("\n".join([lines[0]] + [hang + line if line else "" for line in lines[1:]]) + "\n")


class _Context(typer.Context):
    formatter_class = _HelpFormatter


#: commands that compute nothing heavy (listings, headers, downloads): no --threads
_NOT_COMPUTE = {"info", "models", "degradations", "import-weights", "list", "download", "status"}
THREADS_HELP = "Threads for torch, GDAL and NumPy (default: all cores); recorded in the outputs' tags."


@functools.lru_cache(maxsize=1)
def _threads_option() -> Any:
    """The ``--threads`` parameter as typer builds it (same help layout and range check as every option); built
    once and shared by every compute command."""
    one = typer.Typer()

    @one.command()
    def threads(threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP)) -> None:
        """A carrier for the parameter."""

    return typer.main.get_command(one).params[0]


def _add_threads(cmd: Any) -> None:
    """Give a compute command the shared ``--threads`` option, applied before its body runs (and so before torch
    is imported, which then sizes its pool from it)."""
    cmd.params.append(_threads_option())
    body = cmd.callback

    def with_threads(*args: Any, threads: Optional[int] = None, **kwargs: Any) -> Any:
        from hsikit.threads import set_threads

        set_threads(threads)
        return body(*args, **kwargs)

    cmd.callback = with_threads


class _Group(TyperGroup):
    """A command group whose help (and its commands' help) is click's plain text, summaries included whole; its
    compute commands share one ``--threads`` option."""

    context_class = _Context

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, cmd in self.commands.items():
            cmd.context_class = _Context
            if (not isinstance(cmd, TyperGroup) and name not in _NOT_COMPUTE
                    and not any(p.name == "threads" for p in cmd.params)):
                _add_threads(cmd)

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        rows = [(name, cmd.get_short_help_str(limit=10_000)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def plain_help(t: typer.Typer) -> None:
    """Use :class:`_Group` for ``t`` and every group below it (rich's help panels truncate at 80 columns)."""
    t.info.cls = _Group
    for group in t.registered_groups:
        plain_help(group.typer_instance)


def text_width() -> int:
    """Width of listings: the terminal's (``COLUMNS``, else 80, when not a terminal), at most 100."""
    return max(40, min(shutil.get_terminal_size().columns, 100))


app = typer.Typer(
    name="hsikit",
    help="Hyperspectral and multispectral remote sensing: inspect, preprocess, train and classify whole scenes "
    "in tiles, writing georeferenced Cloud-Optimised GeoTIFFs that open styled in QGIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

train_app = typer.Typer(help="Train models on labelled scenes.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(datasets_app, name="datasets")
benchmark_app = typer.Typer(help="Run a paper's protocol over several seeds and report mean ± std.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")

def _version(value: bool) -> None:
    if value:
        typer.echo(f"hsikit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: neither bars on a terminal nor the "
                               "progress lines written to logs and pipes."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """hsikit: read any GDAL raster, prepare its bands, run models over the whole scene in tiles."""
    state["debug"] = debug
    state["progress"] = not quiet
