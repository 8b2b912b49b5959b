"""``hsikit batch TASK INPUTS... -o OUTDIR`` and ``hsikit batch status OUTDIR``.

``batch`` is a command group whose sub-commands are the tasks (each with its own options and ``--help``) plus
``status``. A task's own options are built from its command's option spec (:mod:`hsikit.pipelines.options`, the
declaration the single-scene command is built from too); the options every task shares are added to each task
command from one list. Dask and torch load inside the commands.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from hsikit.cli.app import app
from hsikit.cli.options import command_line
from hsikit.cli.specs import batch_parameters, plain_options
from hsikit.cli.state import state
from hsikit.pipelines.options import CommandSpec

#: what every task command's exit code means (also in each one's --help)
EXIT_CODES = ("Exit code 0: every scene done; 1: some scenes failed or did not finish (each failure is listed "
              "with its reason, and kept in the manifest); 2: nothing was processed because of a bad option, a "
              "missing input or an unusable output folder (e.g. two outputs that would share a file name, or "
              "another batch running on it); 130 or 143: interrupted by SIGINT (Ctrl-C) or SIGTERM, finished scenes "
              "kept.")

batch_app = typer.Typer(
    help="Process many scenes on Dask distributed (a local cluster of worker processes, or --scheduler): "
    "TASK is classify, denoise, super-resolve, restore, preprocess or stress. A manifest in OUTDIR records every "
    "scene; re-running the same command resumes (done scenes are skipped). " + EXIT_CODES,
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")


def _p(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_INPUTS = inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list[str],
                            default=typer.Argument(..., show_default=False, help="Scene files, folders (searched "
                                                   "recursively for rasters and SAFE products), globs (quote them) "
                                                   "or STAC catalog / collection / item-collection JSON files or "
                                                   "URLs (assets are read in place)."))

#: options every task takes, in --help order after the task's own
_COMMON = [
    _p("out", Path, typer.Option(..., "-o", "--out", help="Output folder: one output per scene (named after it; "
       "inputs that share a file name get a short hash of their path added), the manifest hsikit-batch.sqlite, a STAC "
       "catalogue of the outputs (catalog.json) and a hidden work folder .hsikit-batch/.")),
    _p("workers", Optional[int], typer.Option(None, "--workers", "-w", min=1, help="Worker processes of the local "
       "cluster (default: half the CPU cores).")),
    _p("scheduler", Optional[str], typer.Option(None, "--scheduler", help="Use the Dask scheduler at this address "
       "(tcp://HOST:PORT) instead of a local cluster; OUTDIR, inputs and model must be visible to its workers.")),
    _p("dashboard", Optional[bool], typer.Option(None, "--dashboard/--no-dashboard", help="Serve and print the Dask "
       "dashboard link (default: when bokeh is installed).")),
    _p("retry_failed", bool, typer.Option(False, "--retry-failed", help="Also retry scenes that failed in an "
       "earlier run (interrupted scenes are always retried).")),
    _p("overwrite", bool, typer.Option(False, "--overwrite", help="Replace outputs that exist but were not written "
       "by this batch.")),
    _p("checksum", bool, typer.Option(False, "--checksum", help="Fingerprint inputs by SHA-256 instead of size and "
       "modification time (reads every input once).")),
    _p("block_mpx", float, typer.Option(4.0, "--block-mpx", min=0.0, help="Megapixels per block task: large scenes are "
       "split into row blocks spread over workers (0: one block per scene).")),
    _p("allow_no_crs", bool, typer.Option(False, "--allow-no-crs", help="Process scenes without a CRS on their "
       "pixel grid (by default they fail).")),
    _p("asset", Optional[list[str]], typer.Option(None, "--asset", metavar="KEY", help="STAC asset key(s) to "
       "process (repeatable; default: every raster data asset).")),
    _p("threads", Optional[int], typer.Option(None, "--threads", min=1, help="Torch/BLAS threads per worker "
       "(default: CPU cores / workers).")),
]
_COMMON_NAMES = [p.name for p in _COMMON]


def _options(kw: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(model, task options) from a task command's own parameters."""
    model = kw.pop("model", None)
    return model, plain_options(kw)


def _run(task: str, inputs: list[str], common: dict[str, Any], own: dict[str, Any]) -> None:
    from hsikit.pipelines.batch import run_batch

    model, opts = _options(own)
    state["interrupted"] = (f"the scenes finished so far are kept in {common['out']} and its manifest; run the "
                             "same command again to resume")
    res = run_batch(
        task, inputs, outdir=common["out"], model=model, options=opts, workers=common["workers"],
        scheduler=common["scheduler"], dashboard=common["dashboard"],
        retry_failed=common["retry_failed"], overwrite=common["overwrite"], checksum=common["checksum"],
        block_mpx=common["block_mpx"], allow_no_crs=common["allow_no_crs"], assets=common["asset"],
        threads=common["threads"], progress=state["progress"], echo=typer.echo, command=command_line(),
    )
    _summary(res)
    if res.exit_code:
        from hsikit.pipelines.batch import BatchIncomplete

        raise BatchIncomplete(f"{res.failed} of {res.scenes} scene(s) failed and {res.pending} did not finish "
                              f"(`hsikit batch status {res.outdir}` lists them)")


def _summary(res) -> None:
    typer.echo(
        f"batch {res.task}: {res.scenes} scene(s) in {res.seconds:.1f} s: {res.done} done "
        f"({res.skipped} skipped as already done, {res.recovered} recovered), {res.failed} failed, "
        f"{res.pending} pending; {res.mpx_per_s:.2f} Mpx/s" + (f" on {res.cluster}" if res.cluster else ""))
    _failures(res.failures)
    typer.echo(f"manifest: {Path(res.outdir) / 'hsikit-batch.sqlite'}")
    if res.catalog:
        typer.echo(f"STAC catalogue: {res.catalog}")


def _failures(failures: list[tuple[str, str]]) -> None:
    if not failures:
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("failed scene", "reason", box=None, show_edge=False)
    for name, why in failures:
        t.add_row(name, why)
    Console(width=160, soft_wrap=True).print(t)


def _make_command(task: str, spec: CommandSpec) -> Callable[..., None]:
    def command(**kw: Any) -> None:
        inputs = kw.pop("inputs")
        common = {k: kw.pop(k) for k in _COMMON_NAMES}
        _run(task, inputs, common, kw)

    command.__signature__ = inspect.Signature([_INPUTS, *batch_parameters(spec), *_COMMON])
    command.__name__ = f"batch_{task.replace('-', '_')}"
    return command


def _register() -> None:
    from hsikit.pipelines.batch_tasks import TASKS

    for name, tk in TASKS.items():
        doc = (f"{tk.help} Same options and outputs as `hsikit {tk.command}`, one output per input in OUTDIR. "
               + EXIT_CODES)
        batch_app.command(name, help=doc)(_make_command(name, tk.spec))


_register()


@batch_app.command("status")
def status(
    outdir: Path = typer.Argument(..., help="Output folder of a batch (holding hsikit-batch.sqlite)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON (with one entry per scene)."),
) -> None:
    """Counts per status, failures with their reasons and total times of a batch (exit 0 when all done)."""
    from hsikit.pipelines.batch import batch_status, scenes_table

    st = batch_status(outdir)
    if as_json:
        typer.echo(json.dumps({**st, "scenes_table": scenes_table(outdir)}, indent=2, default=str))
        _status_exit(st)
        return
    c = st["counts"]
    if st["active_pid"]:
        now = f"; a batch is running on it (pid {st['active_pid']})"
    elif c["pending"] + c["running"]:
        now = "; no batch is running on it: the unfinished scenes were interrupted"
    else:
        now = ""
    typer.echo(f"{outdir}: {st['scenes']} scene(s) ({', '.join(st['tasks']) or 'no task'}): {c['done']} done, "
               f"{c['failed']} failed, {c['pending']} pending, {c['running']} running{now}")
    typer.echo(f"{st['runs']} run(s), {st['wall_seconds']:.1f} s wall in total; {st['scene_seconds']:.1f} s of scene "
               f"processing, {st['pixels'] / 1e6:.2f} Mpx done")
    _failures(st["failures"])
    if st["pending"]:
        more = f" and {len(st['pending']) - 10} more" if len(st["pending"]) > 10 else ""
        typer.echo(f"not finished: {', '.join(st['pending'][:10])}{more} (re-run the batch command to resume)")
    _status_exit(st)


def _status_exit(st: dict[str, Any]) -> None:
    from hsikit.pipelines.batch import BatchIncomplete, status_exit_code

    if status_exit_code(st):
        c = st["counts"]
        raise BatchIncomplete(f"batch not complete: {c['failed']} failed, {c['pending'] + c['running']} not finished")
