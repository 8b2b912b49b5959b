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
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hsikit.errors import HsikitError, OptionError, OutputError
from hsikit.pipelines.batch_tasks import TASKS, ModelRef, Task, finished_outputs, reason
from hsikit.pipelines.manifest import Manifest, SceneRow, scene_key

#: a worker dying this many times on one task makes its scene fail (Dask's allowed-failures)
ALLOWED_FAILURES = 1
# hsikit's temporary names (hsikit.io.atomic.temp_path) and the sidecars GDAL may put beside them
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?(\.aux\.xml|\.ovr|\.msk)?$")


class BatchIncomplete(HsikitError):
    """Some scenes failed or are unfinished: the CLI's exit code 1 (user errors before the run exit with 2)."""

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


def default_workers() -> int:
    """Half the CPU cores (at least one): each worker also gets two threads for torch and GDAL."""
    return max(1, (os.cpu_count() or 2) // 2)


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
    """
    from hsikit.io.inputs import check_series_inputs, fingerprint, resolve_inputs

    echo = echo or (lambda s: None)
    if task not in TASKS:
        raise OptionError(f"unknown batch task {task!r}; one of {', '.join(TASKS)}")
    tk = TASKS[task]
    opts = tk.normalise(options)
    outdir = Path(outdir)
    if not outdir.parent.is_dir():
        raise OutputError(f"output directory's parent does not exist: {outdir.parent}")
    outdir.mkdir(exist_ok=True)
    ref = _model_ref(tk, model)
    tk.validate(ref, opts)
    items = resolve_inputs(inputs, series=tk.series, assets=assets, exclude=[outdir])
    if tk.series:
        check_series_inputs(items)

    t_start = time.perf_counter()
    result = BatchResult(outdir=outdir, task=task, scenes=len(items))
    with Manifest(outdir) as man:
        tmp_root = man.work / "tmp"
        _clean_work(outdir, tmp_root)
        key_opts = {**{k: v for k, v in opts.items() if k not in EXECUTION_OPTIONS},
                    "model_sha256": ref.sha256 if ref else None}
        if key_opts.get("legend"):
            key_opts["legend"] = str(Path(key_opts["legend"]).resolve())
        if key_opts.get("chain"):
            key_opts["chain"] = str(Path(key_opts["chain"]).resolve())
        man.start_run(command=command, task=task, cluster=scheduler or f"local:{workers or default_workers()}")
        todo: list[_Scene] = []
        for it in items:
            key = scene_key(task, it.href, key_opts)
            outs = tk.outputs(outdir, it.name, opts)
            row = man.upsert(key=key, name=it.name, href=it.href, task=task, options=key_opts, fingerprint=None,
                             outputs=[str(p) for p in outs.values()])
            try:
                fp = fingerprint(it.href, checksum)
            except HsikitError as e:
                man.failed(key, str(e))
                _count_failed(result, it.name, str(e), echo)
                continue
            sc = _Scene(row, it.href, it.name, outs, fp)
            action = _decide(tk, man, sc, retry_failed)
            if action == "skip":
                result.skipped += 1
                result.done += 1
            elif action == "recovered":
                result.recovered += 1
                result.done += 1
                echo(f"recovered {it.name} (finished by an interrupted run)")
            elif action == "failed":
                _count_failed(result, it.name, f"{row.error} (earlier run; --retry-failed retries it)", None)
            else:
                # a scene submitted before passed the "output exists" check then: what is there now is its own
                sc.overwrite = overwrite or row.attempts > 0
                todo.append(sc)
        status = "done"
        try:
            if todo:
                _plan(tk, ref, opts, todo, man, result, block_mpx, allow_no_crs, echo)
                todo = [s for s in todo if s.blocks or tk.block is None]
            if todo:
                with _client(workers, scheduler, client, dashboard, threads) as (cl, label, link):
                    result.cluster, result.dashboard = label, link
                    if link:
                        echo(f"Dask dashboard: {link}")
                    elif dashboard:
                        echo("Dask dashboard: not available (install bokeh>=3.1 to get one)")
                    _execute(cl, tk, ref, opts, todo, man, result, tmp_root, allow_no_crs, threads, command,
                             progress, echo, t_start)
                    result.model_loads = _model_loads(cl)
        except BaseException:
            status = "interrupted"
            raise
        finally:
            result.pending = sum(1 for s in todo if (man.get(s.row.key) or s.row).status in ("pending", "running"))
            result.seconds = time.perf_counter() - t_start
            man.finish_run(scenes=len(items), done=result.done, failed=result.failed, skipped=result.skipped,
                           status=status if status != "done" or result.exit_code == 0 else "failed")
            if tmp_root.exists() and not any(tmp_root.iterdir()):
                tmp_root.rmdir()
    return result


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
    p = Path(model).resolve()
    read_checkpoint_meta(p)  # a missing or foreign file is a clear error before anything starts
    return ModelRef(str(p), checkpoint_sha256(p))


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
    """Remove every temporary a killed run may have left: the work folder and hsikit temp names in OUTDIR."""
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp_root.mkdir(parents=True)
    for p in outdir.iterdir():
        if p.is_file() and _TEMP_RE.match(p.name):
            p.unlink(missing_ok=True)


def _plan(tk: Task, ref, opts, todo: list[_Scene], man: Manifest, result: BatchResult, block_mpx: float,
          allow_no_crs: bool, echo) -> None:
    """Cheap checks and block plans on the client: a scene that cannot work fails here with its reason."""
    import warnings

    from hsikit.io.open import open_scene
    from hsikit.pipelines.batch_tasks import check_scene

    for sc in todo:
        try:
            existing = [p for p in sc.outputs.values() if p.exists()]
            if existing and not sc.overwrite:
                raise OutputError(f"output exists: {existing[0].name} (use --overwrite to replace it)")
            if tk.block is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with open_scene(sc.href) as scene:
                    check_scene(scene, allow_no_crs)
                    sc.blocks = tk.plan(scene, ref, opts, block_mpx)
        except Exception as e:  # noqa: BLE001 - recorded per scene
            why = reason(e)
            man.failed(sc.row.key, why)  # not an attempt: nothing was submitted (attempts own outputs, see run_batch)
            sc.blocks = []
            sc.final = "failed"
            _count_failed(result, sc.name, why, echo)
    todo[:] = [s for s in todo if s.final != "failed"]


@contextmanager
def _client(workers, scheduler, client, dashboard: bool, threads) -> Iterator[tuple[Any, str, str | None]]:
    """(client, label, dashboard link): the caller's client, one connected to ``scheduler``, or a LocalCluster
    of worker processes (one thread each: GDAL and torch run in parallel across processes)."""
    import dask
    from distributed import Client, LocalCluster

    if client is not None:
        yield client, str(client.scheduler.address), _dashboard_link(client) if dashboard is not False else None
        return
    if scheduler:
        try:
            cl = Client(scheduler, timeout="30s")
        except OSError as e:
            raise OptionError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        try:
            yield cl, scheduler, _dashboard_link(cl) if dashboard is not False else None
        finally:
            cl.close()
        return
    n = int(workers or default_workers())
    if n < 1:
        raise OptionError(f"--workers must be at least 1, not {n}")
    t = int(threads or max(1, (os.cpu_count() or 1) // n))
    env = {k: str(t) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536, **env},
                          "distributed.worker.memory.spill": False}):
        address = ":0" if dashboard is not False and _has_bokeh() else None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=address,
                               silence_logs=logging.ERROR)
        try:
            cl = Client(cluster)
            try:
                yield cl, f"LocalCluster({n} workers x 1 thread, {t} torch threads each)", \
                    _dashboard_link(cl) if address else None
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


def _model_loads(cl) -> dict[str, dict[str, int]]:
    from hsikit.pipelines.batch_tasks import model_loads

    try:
        return cl.run(model_loads)
    except Exception:  # noqa: BLE001 - diagnostics only
        return {}


def _execute(cl, tk: Task, ref, opts, todo: list[_Scene], man: Manifest, result: BatchResult, tmp_root: Path,
             allow_no_crs: bool, threads, command, progress: bool, echo, t_start: float) -> None:
    """Submit every scene's graph (earlier scenes first), then record each as it finishes."""
    from distributed import as_completed

    from hsikit.pipelines.batch_tasks import run_assemble, run_block, run_prepare

    owner: dict[str, _Scene] = {}
    total = len(todo)

    def submit(sc: _Scene, prio: int, suffix: str = "") -> list:
        workdir = tmp_root / sc.row.key
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = {"key": sc.row.key, "fingerprint": sc.fingerprint, "allow_no_crs": allow_no_crs, "threads": threads,
               "overwrite": sc.overwrite, "command": command, "receipt": str(_receipt(man, sc.row.key))}
        tag = f"{sc.row.key[:10]}-{sc.row.attempts + 1}{suffix}"
        man.submitted(sc.row.key)
        prep = None
        if tk.block is not None:
            prep = cl.submit(run_prepare, tk.name, sc.href, ref, opts, ctx, key=f"prepare-{tag}", priority=prio,
                             pure=False)
            blocks = [cl.submit(run_block, tk.name, sc.href, ref, opts, prep, b, str(workdir), ctx,
                                key=f"block-{tag}-{b.index}", priority=prio, pure=False) for b in sc.blocks]
        else:
            blocks = []
        final = cl.submit(run_assemble, tk.name, sc.href, ref, opts, prep, blocks,
                          {k: str(v) for k, v in sc.outputs.items()}, str(workdir), ctx, key=f"assemble-{tag}",
                          priority=prio, pure=False)
        sc.prep, sc.final, sc.futures = prep, final, [f for f in (prep, *blocks, final) if f is not None]
        watched = [f for f in (prep, final) if f is not None]
        for f in watched:
            owner[f.key] = sc
        return watched

    # Dask runs higher priorities first: finish scenes in order, few half-done at a time
    watch = [f for i, sc in enumerate(todo) for f in submit(sc, total - i)]
    # A worker's death counts against every task queued on it, so a scene that kills workers can take others
    # down with it: a scene lost that way gets one more try, alone, once the rest are finished.
    alone: list[_Scene] = []
    bar = _Bar(progress, total, echo)
    t_run = time.perf_counter()
    run_px = 0

    def handle(fut, retried: bool) -> None:
        nonlocal run_px
        sc = owner.pop(fut.key)
        if fut is sc.prep:
            if fut.status == "finished":
                man.running(sc.row.key, fut.result()["t0"])
            return
        ok = False
        if fut.status == "finished":
            res = fut.result()
            missing = [p for p in res["outputs"] if not Path(p).exists()]
            if missing:
                _scene_failed(man, result, sc, f"output {Path(missing[0]).name} was not written", bar)
            else:
                ok = True
                px = int(res["pixels"] or 0)
                run_px += px
                man.done(sc.row.key, outputs=res["outputs"], pixels=px, seconds=res["timings"]["wall"],
                         timings=res["timings"], worker=res["worker"])
                result.done += 1
                result.pixels += px
                nb = res["timings"]["n_blocks"]
                parts = f"{nb} block{'s' if nb != 1 else ''}" if nb else "whole input"
                bar.line(f"done {sc.name} ({res['timings']['wall']:.1f} s, {parts})")
        else:
            killed, why = _killed_worker(fut), _failure_reason(fut)  # before cancelling, which drops the error
            cl.cancel(sc.futures)  # its other blocks would be wasted work
            if killed and not retried:
                owner.pop(sc.prep.key if sc.prep is not None else "", None)
                sc.futures, sc.prep, sc.final = [], None, None
                alone.append(sc)
                return
            _scene_failed(man, result, sc, why, bar)
        shutil.rmtree(tmp_root / sc.row.key, ignore_errors=True)
        sc.futures, sc.prep, sc.final = [], None, None  # release the results on the cluster
        bar.finished(ok, run_px / 1e6 / max(time.perf_counter() - t_run, 1e-9))

    with bar:
        for fut in as_completed(watch):
            if fut.key in owner:
                handle(fut, retried=False)
        for sc in alone:
            for fut in as_completed(submit(sc, 0, suffix="-alone")):
                handle(fut, retried=True)


def _scene_failed(man: Manifest, result: BatchResult, sc: _Scene, why: str, bar: "_Bar") -> None:
    man.failed(sc.row.key, why)
    result.failed += 1
    result.failures.append((sc.name, why))
    bar.line(f"failed {sc.name}: {why}")


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


class _Bar:
    """Live progress (scenes done / failed / pending, Mpx/s) with rich, and one line per finished scene."""

    def __init__(self, enabled: bool, total: int, echo) -> None:
        self.enabled, self.total, self.echo = enabled, total, echo
        self.ok = self.bad = 0

    def __enter__(self) -> "_Bar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("scenes"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[failed]} failed, {task.fields[pending]} pending, "
                                          "{task.fields[rate]:.2f} Mpx/s"), TimeElapsedColumn())
            self._p.__enter__()
            self._task = self._p.add_task("scenes", total=self.total, failed=0, pending=self.total, rate=0.0)
        return self

    def finished(self, ok: bool, rate: float) -> None:
        self.ok += int(ok)
        self.bad += int(not ok)
        if self.enabled:
            n = self.ok + self.bad
            self._p.update(self._task, completed=n, failed=self.bad, pending=self.total - n, rate=rate)

    def line(self, text: str) -> None:
        if self.enabled:
            self._p.console.print(text, highlight=False, markup=False)
        else:
            self.echo(text)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._p.__exit__(*exc)


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

