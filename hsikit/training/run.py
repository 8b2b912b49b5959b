"""One training run: the options every training pipeline shares (:class:`RunOptions`) and what is done with them
(:func:`prepare_run`): the checkpoint and report-folder checks, the report folder, seeding, the device, the
Lightning trainer and the provenance every checkpoint records.

Importing this module loads neither torch nor Lightning, so the CLI can build :class:`RunOptions` and run the
output checks before they load."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsikit.errors import OutputError
from hsikit.training.distributed import is_global_zero

if TYPE_CHECKING:
    import lightning as L
    import torch

@dataclass(frozen=True)
class RunOptions:
    """How a training run computes, where it writes and what it records. The same for every training pipeline.

    * compute: ``device`` ("auto", "cpu", "cuda", "cuda:N"), Lightning ``precision``, ``devices`` processes (CPU)
      or GPUs per node on ``num_nodes`` nodes (more than one in total: distributed data parallel with
      ``strategy`` "auto"/"ddp");
    * run folder: ``report_dir`` (default ``<checkpoint stem>_report`` beside the checkpoint), ``overwrite`` an
      earlier run's checkpoint and report, ``resume`` an interrupted run from ``<report>/checkpoints/last.ckpt``;
    * ``seed`` (None: the recipe's), ``progress`` bars or lines, and the ``command`` line recorded as provenance.
    """

    device: str = "auto"
    precision: str = "32-true"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    report_dir: str | Path | None = None
    overwrite: bool = False
    resume: bool = False
    seed: int | None = None
    progress: bool = True
    command: str | None = None

    @property
    def processes(self) -> int:
        """Processes of the run: ``devices`` per node times ``num_nodes``."""
        return max(1, int(self.devices)) * max(1, int(self.num_nodes))

    def replace(self, **changes: Any) -> "RunOptions":
        return dataclasses.replace(self, **changes)


def report_folder(out: str | Path, report_dir: str | Path | None) -> Path:
    """The report folder of the checkpoint ``out``: ``report_dir``, else ``<out stem>_report`` beside it."""
    out = Path(out)
    return Path(report_dir) if report_dir else out.with_name(out.stem + "_report")


def check_run_outputs(out: str | Path, options: RunOptions) -> Path:
    """Refuse an existing checkpoint or a non-empty report folder unless ``overwrite`` (or ``resume``, which
    continues into them); returns the report folder. Loads no torch: the CLI calls it before anything heavy."""
    from hsikit.io.atomic import check_output

    out = Path(out)
    check_output(out, options.overwrite or options.resume)  # a resumed run replaces its own earlier checkpoint
    rdir = report_folder(out, options.report_dir)
    if rdir.is_dir() and not options.overwrite and not options.resume and any(rdir.iterdir()):
        raise OutputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")
    return rdir


def created() -> str:
    """Creation time in ISO 8601 UTC; ``SOURCE_DATE_EPOCH`` fixes it for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return t.replace(microsecond=0).isoformat()


def jsonable(cfg: Any) -> dict[str, Any]:
    """A model configuration (dataclass or dict) as JSON-ready values: tuples become lists."""
    items = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items.items()}


@dataclass
class RunResult:
    """What a training run leaves: the checkpoint, its metrics, the per-epoch history, the report folder and the
    seconds it took (``metrics`` is empty on DDP ranks other than 0, which write nothing). Each training pipeline
    returns it, or a subclass with its own extra fields."""

    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    report_dir: Path | None = None
    seconds: float = 0.0


@dataclass
class Run:
    """A training run: its checkpoint ``out``, report folder ``dir``, ``options``, and whether this process is
    the one that writes (``lead``: the global rank 0, or the only process). Made by :func:`prepare_run`."""

    out: Path
    dir: Path
    options: RunOptions
    lead: bool = True
    started: float = field(default_factory=time.perf_counter)
    device: "torch.device | None" = None
    seed: int | None = None

    @classmethod
    def at(cls, run_dir: str | Path, options: RunOptions | None = None, *, seed: int = 0) -> "Run":
        """A run writing into ``run_dir`` itself (for calling the ``fit_*`` functions directly), started."""
        run_dir = Path(run_dir)
        run = cls(run_dir / "model.safetensors", run_dir, options or RunOptions())
        run.start(seed)
        return run

    @property
    def processes(self) -> int:
        return self.options.processes

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def start(self, seed: int) -> "torch.device":
        """Begin the work: clean an overwritten run's resumable state, create the report folder (rank 0), seed
        torch and NumPy with ``seed`` and resolve the device. Called once the inputs are checked, so a refused
        input leaves no folder behind."""
        import numpy as np
        import torch

        if self.lead:
            opts = self.options
            if opts.resume and not (self.dir / "checkpoints" / "last.ckpt").exists():
                warnings.warn(f"--resume: no interrupted run in {self.dir}; starting from scratch", stacklevel=2)
            if opts.overwrite and not opts.resume:  # an earlier run's resumable state must not leak in
                for stale in (self.dir / "checkpoints" / "last.ckpt", self.dir / "metrics.csv"):
                    if stale.exists():
                        stale.unlink()
            self.dir.mkdir(parents=True, exist_ok=True)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        return self._device()

    def trainer(self, *, max_epochs: int = -1, max_steps: int = -1, grad_clip: float | None = None,
                steps_per_epoch: int = 1, callbacks: list[Any] | None = None, save_every_epoch: bool = False,
                use_distributed_sampler: bool = True) -> "L.Trainer":
        """The Lightning trainer of this run (see :func:`hsikit.training.module.make_trainer`)."""
        from hsikit.training.module import make_trainer

        o = self.options
        return make_trainer(self.dir, device=self._device(), progress=o.progress, precision=o.precision,
                            max_epochs=max_epochs, max_steps=max_steps, grad_clip=grad_clip,
                            steps_per_epoch=steps_per_epoch, devices=o.devices, strategy=o.strategy,
                            num_nodes=o.num_nodes, callbacks=callbacks, save_every_epoch=save_every_epoch,
                            use_distributed_sampler=use_distributed_sampler)

    def fit(self, trainer: "L.Trainer", module: Any, loader: Any) -> None:
        """``trainer.fit``, resuming from ``<report>/checkpoints/last.ckpt`` when the run resumes."""
        from hsikit.training.module import run_fit

        run_fit(trainer, module, loader, self.dir, self.options.resume)

    def resumed_from(self) -> int | None:
        """The optimiser step a resumed run continues from (None: not resuming, or nothing to resume)."""
        from hsikit.training.module import resume_step

        return resume_step(self.dir) if self.options.resume else None

    def provenance(self, **facts: Any) -> dict[str, Any]:
        """The checkpoint's provenance: the command line, the creation time and the seed, then ``facts``."""
        return {"command": self.options.command, "created": created(), "seed": self.seed, **facts}

    def save(self, net: Any, meta: Any) -> Path:
        """Write the checkpoint (replacing it when the run overwrites or resumes)."""
        from hsikit.checkpoint import save_checkpoint

        save_checkpoint(self.out, net, meta, overwrite=self.options.overwrite or self.options.resume)
        return self.out

    def _device(self) -> "torch.device":
        if self.device is None:
            from hsikit.engine.torch_predict import resolve_device

            self.device = resolve_device(self.options.device)
        return self.device


def prepare_run(out: str | Path, options: RunOptions | None = None) -> Run:
    """Check the run's outputs (on the writing process only: DDP runs the pipeline on every rank) and return the
    :class:`Run`; nothing is created until :meth:`Run.start`."""
    options = options or RunOptions()
    out = Path(out)
    lead = is_global_zero()
    rdir = check_run_outputs(out, options) if lead else report_folder(out, options.report_dir)
    return Run(out, rdir, options, lead=lead)
