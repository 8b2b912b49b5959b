"""Batch processing of archives on Dask distributed: plan, submit one task graph per scene, record, resume.

``run_batch("classify", ["archive/"], outdir="maps/", model="m.safetensors", workers=2)`` resolves the inputs
(:mod:`hsikit.io.inputs`), checks each scene cheaply on the client (readable, bands match the checkpoint, has a
CRS), and submits per scene a graph ``prepare -> blocks -> assemble`` (:mod:`hsikit.pipelines.batch_tasks`) to a
``LocalCluster`` of worker processes or to the scheduler at ``scheduler``. The manifest in OUTDIR
(:mod:`hsikit.pipelines.manifest`) is written by this client only; re-running the same call skips scenes done
with the same input and options, retries interrupted ones and, with ``retry_failed``, failed ones.

No data lost: outputs appear only by atomic rename (their temporaries live in ``OUTDIR/.hsikit-batch/tmp``,
wiped at the start of every run); a scene whose outputs were renamed into place but not yet recorded when the
client died is recognised by the manifest key in the outputs' tags and recorded as done without recomputing.
No output overwrites another of the same run: inputs that share a file name get distinct output names (a short
hash of their path, see :func:`hsikit.io.inputs.resolve_inputs`, with a note), and any two outputs that would
still share a file, or an output that would replace an input, stop the run before it starts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hsikit.errors import HsikitError, OptionError, OutputError
from hsikit.pipelines.batch_tasks import (TASKS, ModelRef, Task, check_scene, failure, finished_outputs, reason,
                                          run_assemble, run_block, run_prepare)
from hsikit.pipelines.manifest import WORK_NAME, Manifest, SceneRow, scene_key
from hsikit.threads import available_cores

#: a worker dying this many times on one task makes its scene fail (Dask's allowed-failures)
ALLOWED_FAILURES = 1
# hsikit's temporary names (hsikit.io.atomic.temp_path: ".{output}.[{pid}-{host}.]{random}.tmp...", also those of
# GDAL's sidecars beside them): group 1 is the output's file name
_TEMP_RE = re.compile(r"^\.(.+?)\.(?:\d+-[0-9a-f]{6}\.)?[0-9a-f]{8}\.tmp")


class BatchIncomplete(HsikitError):
    """Some scenes failed or are unfinished: the CLI's exit code 1 (errors that stop a run before any scene is
    processed, such as a bad option or colliding output names, exit with 2)."""

    exit_code = 1


#: options that change how, not what, a scene is computed: not part of the manifest key
EXECUTION_OPTIONS = ("device", "batch_size")


@dataclass
class BatchResult:
    """What a batch run did. ``exit_code``: 0 when every scene is done, 1 when any failed or is still pending."""

    outdir: Path
    task: str
    scenes: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    recovered: int = 0
    pending: int = 0
    seconds: float = 0.0
    pixels: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    model_loads: dict[str, dict[str, int]] = field(default_factory=dict)
    dashboard: str | None = None
    cluster: str = ""
    catalog: Path | None = None  # OUTDIR/catalog.json, the STAC catalogue of the done scenes

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 and self.pending == 0 else 1

    @property
    def mpx_per_s(self) -> float:
        return self.pixels / 1e6 / max(self.seconds, 1e-9)


@dataclass
class _Scene:
    row: SceneRow
    href: str
    name: str
    outputs: dict[str, Path]
    fingerprint: dict | None
    overwrite: bool = False
    blocks: list = field(default_factory=list)
    futures: list = field(default_factory=list)
    prep: Any = None
    final: Any = None


def _silent(line: str) -> None:
    pass


@dataclass
class _Batch:
    """What the steps of one :func:`run_batch` share (the open manifest is passed on beside it)."""

    task: str
    tk: Task
    ref: ModelRef | None
    opts: dict[str, Any]
    outdir: Path
    items: list[Any]
    echo: Callable[[str], None] = _silent
    info: Callable[[str], None] = _silent  # the lines shown only with progress
    allow_no_crs: bool = False
    progress: bool = True
    command: str | None = None
    threads: int | None = None  # torch threads per worker, as the cluster sets them
    t_start: float = field(default_factory=time.perf_counter)
    result: BatchResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = BatchResult(outdir=self.outdir, task=self.task, scenes=len(self.items))

    @property
    def tmp_root(self) -> Path:
        """The work folder of the scenes' temporaries."""
        return self.outdir / WORK_NAME / "tmp"


def default_workers() -> int:
    """Half the CPU cores (at least one): each worker also gets two threads for torch and GDAL."""
    return max(1, available_cores() // 2)


def run_batch(
    task: str,
    inputs: Sequence[str | Path],
    *,
    outdir: str | Path,
    model: str | Path | None = None,
    options: dict[str, Any] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    dashboard: bool | None = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    checksum: bool = False,
    block_mpx: float = 4.0,
    allow_no_crs: bool = False,
    assets: Sequence[str] | None = None,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    command: str | None = None,
) -> BatchResult:
    """Run ``task`` (a key of :data:`~hsikit.pipelines.batch_tasks.TASKS`) over ``inputs`` into ``outdir``.

    ``workers`` worker processes on a local cluster (default :func:`default_workers`), or an existing cluster at
    ``scheduler`` (``tcp://host:port``) or ``client``. ``dashboard``: serve/print the Dask dashboard link (None:
    when bokeh is installed, silently otherwise). ``block_mpx``: megapixels per block task (0: one block per
    scene). ``checksum`` fingerprints inputs by SHA-256 instead of size + mtime. ``allow_no_crs`` processes
    scenes without a CRS on their pixel grid (by default they fail). ``threads``: torch/BLAS threads per worker
    (default: cores / workers). Every scene's fate is in the manifest; the result sums it up.

    ``echo`` gets the lines for the user: each failed scene with its reason, notes, and with ``progress`` also
    the start of the cluster and of the work and each finished scene; ``progress`` also shows
    :class:`hsikit.progress.Progress` on stdout (a bar on a terminal, plain lines in a log). A scene's warnings
    (e.g. a band filled by interpolation) are given with :func:`warnings.warn` and noted in the manifest.
    """
    echo = echo or _silent
    tk, ref, opts, out, items = _setup(task, inputs, outdir, model, options, assets, echo)
    b = _Batch(task, tk, ref, opts, out, items, echo, info=echo if progress else _silent, allow_no_crs=allow_no_crs,
               progress=progress, command=command)
    with Manifest(out) as man:
        _clean_work(out, b.tmp_root)
        man.start_run(command=command, task=task, cluster=scheduler or f"local:{workers or default_workers()}")
        todo = _triage(b, man, checksum, retry_failed, overwrite)
        status = "done"
        try:
            if todo:
                todo = _plan(b, man, todo, block_mpx)
            if todo:
                with _client(workers, scheduler, client, dashboard, threads, b.info) as (cl, label, link, b.threads):
                    _run_on_cluster(b, man, cl, label, link, dashboard, todo)
        except BaseException:
            status = "interrupted"
            raise
        finally:
            _finish_run(b, man, todo, status)
    return b.result


def _setup(task: str, inputs: Sequence[str | Path], outdir: str | Path, model: str | Path | None,
           options: dict[str, Any] | None, assets: Sequence[str] | None,
           echo: Callable[[str], None]) -> tuple[Task, ModelRef | None, dict[str, Any], Path, list[Any]]:
    """Check the task, its options and model and OUTDIR, and resolve the inputs: the errors that stop a run before
    any scene is looked at. Returns (task, model, options, OUTDIR, inputs)."""
    from hsikit.io.inputs import check_series_inputs, resolve_inputs

    if task not in TASKS:
        raise OptionError(f"unknown batch task {task!r}; one of {', '.join(TASKS)}")
    tk = TASKS[task]
    opts = tk.normalise(options)
    out = Path(outdir)
    if not out.parent.is_dir():
        raise OutputError(f"output directory's parent does not exist: {out.parent}")
    out.mkdir(exist_ok=True)
    ref = _model_ref(tk, model)
    tk.validate(ref, opts)
    items = resolve_inputs(inputs, series=tk.series, assets=assets, exclude=[out])
    if tk.series:
        check_series_inputs(items)
    check_output_names(tk, out, items, opts)
    note = renamed_note(items, out)
    if note:
        echo(note)
    return tk, ref, opts, out, list(items)


def _key_options(opts: dict[str, Any], ref: ModelRef | None) -> dict[str, Any]:
    """The options in a scene's manifest key: what is computed, with the model's hash and absolute paths."""
    key_opts = {**{k: v for k, v in opts.items() if k not in EXECUTION_OPTIONS},
                "model_sha256": ref.sha256 if ref else None}
    if key_opts.get("legend"):
        key_opts["legend"] = str(Path(key_opts["legend"]).resolve())
    if key_opts.get("chain"):
        key_opts["chain"] = str(Path(key_opts["chain"]).resolve())
    return key_opts


def _triage(b: _Batch, man: Manifest, checksum: bool, retry_failed: bool, overwrite: bool) -> list[_Scene]:
    """Record every input in the manifest and decide its fate (skipped, recovered, failed before, or to do);
    return the scenes to do."""
    from hsikit.io.inputs import fingerprint

    result, key_opts = b.result, _key_options(b.opts, b.ref)
    todo: list[_Scene] = []
    for it in b.items:
        key = scene_key(b.task, it.href, key_opts)
        outs = b.tk.outputs(b.outdir, it.name, b.opts)
        row = man.upsert(key=key, name=it.name, href=it.href, task=b.task, options=key_opts, fingerprint=None,
                         outputs=[str(p) for p in outs.values()])
        try:
            fp = fingerprint(it.href, checksum)
        except HsikitError as e:
            man.failed(key, str(e))
            _count_failed(result, it.name, str(e), b.echo)
            continue
        sc = _Scene(row, it.href, it.name, outs, fp)
        action = _decide(b.tk, man, sc, retry_failed)
        if action == "skip":
            result.skipped += 1
            result.done += 1
        elif action == "recovered":
            result.recovered += 1
            result.done += 1
            b.echo(f"recovered {it.name} (finished by an interrupted run)")
        elif action == "failed":
            _count_failed(result, it.name, f"{row.error} (earlier run; --retry-failed retries it)", None)
        else:
            # a scene submitted before passed the "output exists" check then: what is there now is its own
            sc.overwrite = overwrite or row.attempts > 0
            todo.append(sc)
    return todo


def _run_on_cluster(b: _Batch, man: Manifest, cl, label: str, link: str | None, dashboard: bool | None,
                    todo: list[_Scene]) -> None:
    """Say where the work runs, run it, and note how often each worker loaded a model."""
    b.result.cluster, b.result.dashboard = label, link
    if link:
        b.echo(f"Dask dashboard: {link}")
    elif dashboard:
        b.echo("Dask dashboard: not available (install bokeh>=3.1 to get one)")
    n, scenes = _n_workers(cl), len(b.items)
    b.info(f"batch {b.task}: {scenes} scene{_s(scenes)}, {len(todo)} to do, {n} worker{_s(n)}")
    _Execution(cl, b, man, len(todo)).run(todo)
    b.result.model_loads = _model_loads(cl)


def _finish_run(b: _Batch, man: Manifest, todo: list[_Scene], status: str) -> None:
    """Sum the run up in the result and the manifest (also when it was interrupted); drop an empty work folder."""
    result = b.result
    result.pending = sum(1 for s in todo if (man.get(s.row.key) or s.row).status in ("pending", "running"))
    result.seconds = time.perf_counter() - b.t_start
    man.finish_run(scenes=len(b.items), done=result.done, failed=result.failed, skipped=result.skipped,
                   status=status if status != "done" or result.exit_code == 0 else "failed")
    if status == "done":
        _write_catalog(b, man)
    if b.tmp_root.exists() and not any(b.tmp_root.iterdir()):
        b.tmp_root.rmdir()


def _write_catalog(b: _Batch, man: Manifest) -> None:
    """Bring OUTDIR's STAC catalogue up to date with the manifest (:mod:`hsikit.pipelines.batch_stac`); a done
    scene whose outputs cannot be read is left out with a note."""
    from hsikit.pipelines.batch_stac import write_batch_catalog

    cat = write_batch_catalog(b.outdir, models={b.ref.sha256: b.ref.path} if b.ref else None, manifest=man)
    b.result.catalog = cat.path
    for name, why in cat.skipped:
        b.echo(f"note: {name} is not in the STAC catalogue ({cat.path.name}): {why}")
    for text in cat.notes:
        b.info(f"note: {text}")


def _model_ref(tk: Task, model: str | Path | None) -> ModelRef | None:
    from hsikit.checkpoint import checkpoint_sha256, read_checkpoint_meta
    from hsikit.pipelines.common import default_model

    if not tk.needs_model:
        if model is not None:
            raise OptionError(f"batch {tk.name} takes no --model")
        return None
    if model is None:
        if tk.name != "classify":
            raise OptionError(f"batch {tk.name} needs --model")
        model = default_model()
    from hsikit.export.onnx import is_exported, read_exported

    p = Path(model).resolve()
    # a missing or foreign file is a clear error before anything starts
    read_exported(p) if is_exported(p) else read_checkpoint_meta(p)
    return ModelRef(str(p), checkpoint_sha256(p))


def check_output_names(tk: Task, outdir: Path, items: Sequence[Any], opts: dict[str, Any]) -> None:
    """Refuse a run in which two outputs would share a file (e.g. the probabilities of ``x`` and the class map of
    an input named ``x_probabilities``) or an output would replace one of the inputs (an input inside OUTDIR):
    :class:`OutputError` naming both, before any work starts."""
    from hsikit.io.inputs import input_files

    inputs: dict[str, Any] = {}
    for it in items:
        if not Path(it.href).is_dir():
            for f in input_files(it.href):
                inputs[os.path.normcase(str(f.resolve()))] = it
    seen: dict[str, tuple[Any, str]] = {}
    for it in items:
        for role, path in tk.outputs(outdir, it.name, opts).items():
            what = role.replace("_", " ")
            key = os.path.normcase(str(path.resolve()))
            if key in seen:
                other, other_what = seen[key]
                raise OutputError(f"{path.name} would be written twice in {outdir}: as the {other_what} of "
                                  f"{other.href} and as the {what} of {it.href}; rename one of them or run them "
                                  "into separate output folders")
            if key in inputs:
                raise OutputError(f"the {what} of {it.href} would replace the input {inputs[key].href}; "
                                  "choose another output folder")
            seen[key] = (it, what)


def renamed_note(items: Sequence[Any], outdir: Path) -> str | None:
    """One line saying which inputs got their path's hash in their output names (they share a file name with
    another input), or None."""
    renamed = []
    for it in items:
        tail = "_" + hashlib.sha1(it.href.encode()).hexdigest()[:6]  # as hsikit.io.inputs names them
        if it.name.endswith(tail):
            renamed.append(it)
    if not renamed:
        return None
    eg = ", ".join(f"{it.name} for {it.href}" for it in renamed[:2])
    more = f" and {len(renamed) - 2} more" if len(renamed) > 2 else ""
    return (f"note: {len(renamed)} inputs share their file name with another input; their outputs are named "
            f"after the file plus a short hash of its path: {eg}{more} (`hsikit batch status {outdir} --json` "
            "lists every input with its name)")


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _count_failed(result: BatchResult, name: str, why: str, echo) -> None:
    result.failed += 1
    result.failures.append((name, why))
    if echo:
        echo(f"failed {name}: {why}")


def _same_input(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return False
    keys = {"size", "mtime_ns", "files", "remote"} | ({"sha256"} if "sha256" in a and "sha256" in b else set())
    return all(a.get(k) == b.get(k) for k in keys)


def _decide(tk: Task, man: Manifest, sc: _Scene, retry_failed: bool) -> str:
    """skip (done with this input), recovered (finished but unrecorded), failed (kept), or run."""
    row, fp = sc.row, sc.fingerprint
    if row.status == "done":
        if _same_input(row.fingerprint, fp) and all(p.exists() for p in sc.outputs.values()):
            return "skip"
        why = "input changed" if not _same_input(row.fingerprint, fp) else "an output is missing"
        man.set_pending(row.key, fp, why)
        return "run"
    if row.status == "failed" and not retry_failed and _same_input(row.fingerprint, fp):
        return "failed"
    if finished_outputs(tk, row.key, fp, sc.outputs, _receipt(man, row.key)):
        man.done(row.key, outputs=[str(p) for p in sc.outputs.values()], pixels=None, seconds=row.seconds,
                 timings=None, worker=None, event="recovered")
        return "recovered"
    man.set_pending(row.key, fp, f"was {row.status}")
    return "run"


def _receipt(man: Manifest, key: str) -> Path:
    return man.work / "receipts" / f"{key}.json"


def _clean_work(outdir: Path, tmp_root: Path) -> None:
    """Start with an empty work folder (the manifest's lock keeps other batches out of it), and remove the hsikit
    temporaries in OUTDIR whose owner has ended: those of a live process, e.g. a single-scene command writing
    into OUTDIR now, are kept (:func:`hsikit.io.atomic.remove_stale_temps`)."""
    from hsikit.io.atomic import remove_stale_temps

    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp_root.mkdir(parents=True)
    finals = {m.group(1) for p in outdir.iterdir() if (m := _TEMP_RE.match(p.name)) and p.is_file()}
    for name in sorted(finals):
        remove_stale_temps(outdir / name)


def _plan(b: _Batch, man: Manifest, todo: list[_Scene], block_mpx: float) -> list[_Scene]:
    """Cheap checks and block plans on the client: a scene that cannot work fails here with its reason. Returns
    the scenes to submit."""
    from hsikit.io.open import open_scene

    b.info(f"batch {b.task}: checking {len(todo)} of {len(b.items)} scene{_s(len(b.items))}")
    for sc in todo:
        try:
            existing = [p for p in sc.outputs.values() if p.exists()]
            if existing and not sc.overwrite:
                raise OutputError(f"output exists: {existing[0].name} (use --overwrite to replace it)")
            if b.tk.block is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with open_scene(sc.href) as scene:
                    check_scene(scene, b.allow_no_crs)
                    sc.blocks = b.tk.plan(scene, b.ref, b.opts, block_mpx)
        except Exception as e:  # noqa: BLE001 - recorded per scene
            why = reason(e)
            man.failed(sc.row.key, why)  # not an attempt: nothing was submitted (attempts own outputs, see _triage)
            sc.blocks = []
            sc.final = "failed"
            _count_failed(b.result, sc.name, why, b.echo)
    return [s for s in todo if s.final != "failed" and (s.blocks or b.tk.block is None)]


@contextmanager
def _client(workers, scheduler, client, dashboard: bool | None, threads,
            info: Callable[[str], None]) -> Iterator[tuple[Any, str, str | None, int | None]]:
    """(client, label, dashboard link, threads per worker): the caller's client, one connected to ``scheduler``,
    or a LocalCluster of worker processes (one thread each: GDAL and torch run in parallel across processes).
    ``info`` gets one line before a cluster is started or connected to (which can take a while)."""
    import dask
    from distributed import Client, LocalCluster

    if client is not None:
        yield client, str(client.scheduler.address), _dashboard_link(client) if dashboard is not False else None, \
            threads
        return
    if scheduler:
        info(f"batch: connecting to the Dask scheduler at {scheduler}")
        try:
            cl = Client(scheduler, timeout="30s")
        except OSError as e:
            raise OptionError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        try:
            yield cl, scheduler, _dashboard_link(cl) if dashboard is not False else None, threads
        finally:
            cl.close()
        return
    n = int(workers or default_workers())
    if n < 1:
        raise OptionError(f"--workers must be at least 1, not {n}")
    cores = available_cores()
    share = max(1, cores // n)
    t = int(threads or share)
    if t > share:  # workers x threads beyond the cores: every worker would wait on the others
        warnings.warn(f"--threads {t} x {n} workers exceeds the {cores} cores here: using {share} thread"
                      f"{_s(share)} per worker", stacklevel=3)
        t = share
    env = {k: str(t) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    info(f"batch: starting a local Dask cluster of {n} worker process{'es' if n != 1 else ''}")
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536, **env},
                          "distributed.worker.memory.spill": False}):
        show = dashboard is not False and _has_bokeh()
        # a free port: the scheduler's HTTP server starts even without a dashboard, and its default port 8787 is
        # taken by any other cluster on this machine (Dask then warns over several lines)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        try:
            cl = Client(cluster)
            try:
                yield cl, f"LocalCluster({n} workers x 1 thread, {t} torch threads each)", \
                    _dashboard_link(cl) if show else None, t
            finally:
                cl.close()
        finally:
            cluster.close()


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _dashboard_link(cl) -> str | None:
    try:
        if "dashboard" in cl.scheduler_info().get("services", {}):
            return cl.dashboard_link
    except Exception:  # noqa: BLE001 - no link is not an error
        return None
    return None


def _n_workers(cl) -> int:
    try:
        return len(cl.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - only for the start line
        return 0


def _model_loads(cl) -> dict[str, dict[str, int]]:
    from hsikit.pipelines.batch_tasks import model_loads

    try:
        return cl.run(model_loads)
    except Exception:  # noqa: BLE001 - diagnostics only
        return {}


class _Execution:
    """Submit every scene's graph (earlier scenes first), then record each as it finishes. Every task of a scene
    is watched: the first failure record (or error) ends the scene at once and cancels the rest of its graph."""

    def __init__(self, cl, b: _Batch, man: Manifest, total: int) -> None:
        from hsikit.progress import Progress

        self.cl, self.b, self.man, self.total = cl, b, man, total
        self.live: dict[str, _Scene] = {}  # key of each future still watched -> its scene
        # A worker's death counts against every task queued on it, so a scene that kills workers can take others
        # down with it: a scene lost that way gets one more try, alone, once the rest are finished.
        self.alone: list[_Scene] = []
        self.bar = Progress(b.progress, total, "batch", unit="scenes", stream=sys.stdout)

    def run(self, todo: list[_Scene]) -> None:
        from distributed import as_completed

        # Dask runs higher priorities first: finish scenes in order, few half-done at a time
        watch = [f for i, sc in enumerate(todo) for f in self.submit(sc, self.total - i)]
        with self.bar:
            ac = as_completed(watch)
            for fut in ac:
                self.handle(fut, False, ac)
            for sc in self.alone:
                ac = as_completed(self.submit(sc, 0, suffix="-alone"))
                for fut in ac:
                    self.handle(fut, True, ac)

    def submit(self, sc: _Scene, prio: int, suffix: str = "") -> list:
        """Submit the scene's graph prepare -> blocks -> assemble; return its futures."""
        b, cl = self.b, self.cl
        workdir = b.tmp_root / sc.row.key
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = {"key": sc.row.key, "fingerprint": sc.fingerprint, "allow_no_crs": b.allow_no_crs,
               "threads": b.threads, "overwrite": sc.overwrite, "command": b.command,
               "receipt": str(_receipt(self.man, sc.row.key))}
        tag = f"{sc.row.key[:10]}-{sc.row.attempts + 1}{suffix}"
        self.man.submitted(sc.row.key)
        prep = None
        if b.tk.block is not None:
            prep = cl.submit(run_prepare, b.tk.name, sc.href, b.ref, b.opts, ctx, key=f"prepare-{tag}",
                             priority=prio, pure=False)
            blocks = [cl.submit(run_block, b.tk.name, sc.href, b.ref, b.opts, prep, blk, str(workdir), ctx,
                                key=f"block-{tag}-{blk.index}", priority=prio, pure=False) for blk in sc.blocks]
        else:
            blocks = []
        final = cl.submit(run_assemble, b.tk.name, sc.href, b.ref, b.opts, prep, blocks,
                          {k: str(v) for k, v in sc.outputs.items()}, str(workdir), ctx, key=f"assemble-{tag}",
                          priority=prio, pure=False)
        sc.prep, sc.final, sc.futures = prep, final, [f for f in (prep, *blocks, final) if f is not None]
        for f in sc.futures:
            self.live[f.key] = sc
        return sc.futures

    def forget(self, sc: _Scene, cancel: bool) -> None:
        if cancel:
            self.cl.cancel(sc.futures)  # its other tasks would be wasted work
        for f in sc.futures:
            self.live.pop(f.key, None)
        sc.futures, sc.prep, sc.final = [], None, None  # release the results on the cluster

    def ended(self, sc: _Scene, why: str | None, px: int = 0) -> None:
        if why is not None:
            _scene_failed(self.man, self.b.result, sc, why, self.b.echo)
        shutil.rmtree(self.b.tmp_root / sc.row.key, ignore_errors=True)
        self.bar.advance(1, pixels=px)

    def handle(self, fut, retried: bool, ac) -> None:
        """Act on one finished (or failed, lost, cancelled) task of a watched scene."""
        sc = self.live.get(fut.key)
        if sc is None:
            return  # its scene has ended (a cancelled task, or one finishing after its scene failed)
        if fut.status in ("lost", "pending"):
            # finished, but its result went down with a worker before we got to it: the scheduler recomputes it
            ac.add(fut)
            return
        if fut.status != "finished":
            # a live scene's task cancelled by the cluster (not by us: ended scenes leave ``live``) was lost with a
            # worker too, like a KilledWorker
            self.task_failed(sc, fut, _killed_worker(fut) or fut.status == "cancelled", retried)
            return
        try:
            res = fut.result()
        except Exception:  # noqa: BLE001 - lost with a worker since the check above, and failed on recompute
            self.task_failed(sc, fut, True, retried)
            return
        why = failure(res)
        if why is not None:  # the scene is at fault: its reason, as the single-scene command says it
            self.forget(sc, cancel=True)
            self.ended(sc, why)
        elif fut is sc.prep:
            self.prepared(sc, fut, res)
        elif fut is not sc.final:
            self.live.pop(fut.key, None)  # a block: its files are the assemble's business
        else:
            self.finished(sc, res)

    def task_failed(self, sc: _Scene, fut, killed: bool, retried: bool) -> None:
        """End the scene of a failed task, or keep it for a try alone when a worker died under it the first time."""
        why = _failure_reason(fut)  # before cancelling, which drops the error
        self.forget(sc, cancel=True)
        if killed and not retried:
            self.alone.append(sc)
        else:
            self.ended(sc, why)

    def prepared(self, sc: _Scene, fut, res: dict) -> None:
        self.live.pop(fut.key, None)
        self.man.running(sc.row.key, res["t0"])
        for text in res.get("notes") or ():
            self.man.note(sc.row.key, "warning", text)
            warnings.warn(text, stacklevel=1)

    def finished(self, sc: _Scene, res: dict) -> None:
        """Record a scene whose assemble task wrote its outputs."""
        missing = [p for p in res["outputs"] if not Path(p).exists()]
        self.forget(sc, cancel=False)
        if missing:
            self.ended(sc, f"output {Path(missing[0]).name} was not written")
            return
        px = int(res["pixels"] or 0)
        self.man.done(sc.row.key, outputs=res["outputs"], pixels=px, seconds=res["timings"]["wall"],
                      timings=res["timings"], worker=res["worker"])
        self.b.result.done += 1
        self.b.result.pixels += px
        nb = res["timings"]["n_blocks"]
        parts = f"{nb} block{_s(nb)}" if nb else "whole input"
        if self.b.progress:
            self.b.echo(f"done {sc.name} ({res['timings']['wall']:.1f} s, {parts})")
        self.ended(sc, None, px)


def _scene_failed(man: Manifest, result: BatchResult, sc: _Scene, why: str, echo) -> None:
    man.failed(sc.row.key, why)
    result.failed += 1
    result.failures.append((sc.name, why))
    echo(f"failed {sc.name}: {why}")


def _killed_worker(fut) -> bool:
    try:
        return type(fut.exception()).__name__ == "KilledWorker"
    except Exception:  # noqa: BLE001 - e.g. the future was cancelled
        return False


def _failure_reason(fut) -> str:
    try:
        exc = fut.exception()
    except Exception as e:  # noqa: BLE001 - e.g. the future was cancelled
        return reason(e)
    name = type(exc).__name__
    if name == "KilledWorker":
        return ("a worker died while processing this scene, more often than the scheduler allows "
                "(distributed.scheduler.allowed-failures): out of memory, or a crash in a native library")
    return reason(exc)


# -- status ----------------------------------------------------------------------------------------------------------
def batch_status(outdir: str | Path) -> dict[str, Any]:
    """The manifest of ``outdir`` summed up: counts per status, failures with reasons, runs and total times."""
    with Manifest(outdir, writable=False) as man:
        rows = man.scenes()
        runs = man.runs()
        counts = man.counts()
        active = man.active_pid()
    failures = [(r.name, r.error or "") for r in rows if r.status == "failed"]
    wall = sum((r["finished"] or r["started"]) - r["started"] for r in runs if r["started"])
    busy = sum(r.seconds or 0.0 for r in rows if r.status == "done")
    px = sum(r.pixels or 0 for r in rows if r.status == "done")
    return {"outdir": str(outdir), "scenes": len(rows), "counts": counts, "failures": failures,
            "tasks": sorted({r.task for r in rows}), "runs": len(runs), "wall_seconds": wall,
            "scene_seconds": busy, "pixels": px, "last_run": runs[-1] if runs else None, "active_pid": active,
            "pending": [r.name for r in rows if r.status in ("pending", "running")]}


def status_exit_code(st: dict[str, Any]) -> int:
    """0 when every scene in the manifest is done, 1 otherwise."""
    c = st["counts"]
    return 0 if c["failed"] == 0 and c["pending"] == 0 and c["running"] == 0 else 1


def scenes_table(outdir: str | Path) -> list[dict[str, Any]]:
    """One dict per manifest row (for ``--json`` output and tests)."""
    with Manifest(outdir, writable=False) as man:
        return [{"name": r.name, "input": r.input, "task": r.task, "status": r.status, "attempts": r.attempts,
                 "error": r.error, "seconds": r.seconds, "outputs": r.outputs, "key": r.key,
                 "done_events": sum(1 for e in man.events(r.key) if e["event"] in ("done", "recovered"))}
                for r in man.scenes()]

