"""Lightning module and fit loop for classifiers: checkpoint/resume, mixed precision, early stopping and DDP
come from Lightning, progress from hsikit's reporter; the recipe picks the optimiser and schedule of each paper.

Distributed data parallel: :func:`make_trainer` with ``devices`` > 1 (or ``num_nodes`` > 1) and strategy "auto" or
"ddp" runs one process per device (gloo on CPU, NCCL on GPUs); Lightning re-launches the command for the other
ranks, or takes the ranks from ``torchrun``. Map-style loaders get a DistributedSampler from Lightning; streamed
(iterable) datasets shard themselves with :func:`hsikit.training.distributed.shard_info`. Only the global rank 0
writes checkpoints, logs and reports (:func:`hsikit.training.distributed.is_global_zero`)."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from hsikit.training.data import ClassifierData
from hsikit.training.distributed import world_size
from hsikit.training.recipes import Recipe

if TYPE_CHECKING:
    from hsikit.training.run import Run


def resume_step(run_dir: Path) -> int | None:
    """The optimiser step a ``--resume`` of ``run_dir`` continues from (None: nothing to resume)."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    ck = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    return int(ck.get("global_step", 0))


class RunState:
    """Per-epoch history, per-step losses and the best weights so far, carried in Lightning's resumable
    checkpoint. The training data are not part of it; only weights, optimiser, schedule and loop state are."""

    history: list[dict[str, float]]
    loss_curve: list[float]
    best_state: dict[str, torch.Tensor] | None
    best_score: float
    ema_state: dict[str, torch.Tensor] | None = None

    def start_state(self) -> None:
        """A fresh run's state: no history, losses or best weights yet."""
        self.history = []
        self.loss_curve = []  # every optimiser step's loss
        self._epoch_loss: list[float] = []
        self.best_state = None
        self.best_score = -math.inf

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hsikit_history"] = self.history
        checkpoint["hsikit_loss_curve"] = self.loss_curve
        checkpoint["hsikit_best"] = self.best_state
        checkpoint["hsikit_best_score"] = self.best_score
        checkpoint["hsikit_ema"] = self.ema_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("hsikit_history", []))
        self.loss_curve = list(checkpoint.get("hsikit_loss_curve", []))
        self.best_state = checkpoint.get("hsikit_best")
        self.best_score = float(checkpoint.get("hsikit_best_score", -math.inf))
        self.ema_state = checkpoint.get("hsikit_ema")


class ClassifierModule(RunState, L.LightningModule):
    """Wraps an ``nn.Module`` classifier and its :class:`ClassifierData`; validation OA is measured after every
    training epoch on the validation pixels (``val_mask``)."""

    def __init__(self, net: torch.nn.Module, data: ClassifierData, recipe: Recipe, val_mask: np.ndarray,
                 total_steps: int) -> None:
        super().__init__()
        self.net, self.data, self.recipe = net, data, recipe
        self.val_mask = val_mask
        self.val_y = data.labels[val_mask].astype(np.int64) - 1
        self.total_steps = max(1, int(total_steps))
        self.start_state()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.data.loss(self.net, batch)
        self._epoch_loss.append(float(loss.detach()))
        self.loss_curve.append(self._epoch_loss[-1])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=1)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.recipe.ema > 0:
            self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Exponential moving average of the weights; the decay ramps up over the first steps (1+n)/(10+n) so
        the average does not remember the random initialisation."""
        state = self.net.state_dict()
        if self.ema_state is None:
            self.ema_state = {k: v.detach().clone() for k, v in state.items()}
            return
        n = int(self.global_step)
        d = min(float(self.recipe.ema), (1.0 + n) / (10.0 + n))
        for k, v in state.items():
            e = self.ema_state[k]
            if e.device != v.device:
                e = self.ema_state[k] = e.to(v.device)
            if v.is_floating_point():
                e.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                e.copy_(v)

    def kept_state(self) -> dict[str, torch.Tensor] | None:
        """The weights validation sees and the run keeps: the moving average with ``ema``, else None (the live
        weights)."""
        return self.ema_state if self.recipe.ema > 0 else None

    def on_train_epoch_end(self) -> None:
        loss = float(np.mean(self._epoch_loss)) if self._epoch_loss else float("nan")
        self._epoch_loss = []
        live = None
        if self.kept_state() is not None:  # validate the averaged weights
            live = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.net.load_state_dict(self.kept_state())
        if self.val_y.size:
            self.net.eval()
            pred = self.data.predict(self.net, self.val_mask, self.device)
            self.net.train()
            val_oa = float((pred == self.val_y).mean())
        else:
            val_oa = float("nan")
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else float("nan")
        self.history.append({"epoch": len(self.history) + 1, "step": int(self.global_step), "train_loss": loss,
                             "val_oa": val_oa, "lr": lr})
        # early stopping needs a finite metric; without validation the (negated) training loss stands in
        score = val_oa if self.val_y.size else -loss
        # every rank holds the same weights and validation pixels: the values agree, syncing only averages equals
        sync = self.trainer.world_size > 1
        self.log("val_oa", val_oa if self.val_y.size else 0.0, prog_bar=True, sync_dist=sync)
        self.log("score", score, sync_dist=sync)
        # a tie goes to the later epoch: the same validation evidence, more training (a small validation set
        # plateaus early, e.g. at 1 error in 100, while rare classes are still being learnt)
        if self.recipe.select_best and score >= self.best_score:
            self.best_score = score
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
        if live is not None:
            self.net.load_state_dict(live)

    def configure_optimizers(self) -> Any:
        r = self.recipe
        params = self.net.parameters()
        if r.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
        elif r.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay)
        elif r.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {r.optimizer!r}")
        total, power, decay = self.total_steps, r.poly_power, r.decay
        if r.schedule == "poly":
            fn = lambda step: max(0.0, 1.0 - step / total) ** power  # noqa: E731
        elif r.schedule == "inverse_time":
            fn = lambda step: 1.0 / (1.0 + decay * step)  # noqa: E731
        elif r.schedule == "none":
            return opt
        else:
            raise ValueError(f"unknown schedule {r.schedule!r}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(net: torch.nn.Module, data: ClassifierData, recipe: Recipe, val_mask: np.ndarray,
        run: Run) -> tuple[torch.nn.Module, list[dict[str, float]], list[float]]:
    """Train ``net`` with Lightning as ``run`` says (device, precision, processes, resume); returns the network
    to keep (best-on-validation or last, per the recipe), the per-epoch history and the loss of every optimiser
    step. Lightning's own resumable checkpoint is ``<run.dir>/checkpoints/last.ckpt`` (loaded back with torch's
    weights-only unpickler); the model users get is the safetensors file.

    With ``run.processes`` > 1 (DDP) every rank trains on its share of each epoch's batches: an epoch still covers
    the training set once, in 1/world as many optimiser steps of a world-times larger effective batch; the
    learning rate is the recipe's and an ``iterations`` budget counts optimiser steps."""
    from lightning.pytorch.callbacks import EarlyStopping

    data.world = run.processes
    steps_per_epoch = max(1, data.steps_per_epoch())
    if recipe.iterations and recipe.iterations > 0:
        # no epoch bound: a resumed run must not stop at an epoch count derived from the earlier budget
        max_steps, max_epochs = int(recipe.iterations), -1
    else:
        max_epochs, max_steps = int(recipe.epochs), -1
    total = max_steps if max_steps > 0 else max_epochs * steps_per_epoch
    module = ClassifierModule(net, data, recipe, val_mask, total)
    extra: list[Any] = []
    if recipe.early_stopping and val_mask.any():
        extra.append(EarlyStopping(monitor="score", mode="max", patience=int(recipe.patience),
                                   check_on_train_epoch_end=True))
    trainer = run.trainer(max_epochs=max_epochs, max_steps=max_steps, grad_clip=recipe.grad_clip,
                          steps_per_epoch=steps_per_epoch, callbacks=extra, save_every_epoch=True)
    run.fit(trainer, module, data.train_loader())
    if recipe.select_best and module.best_state is not None:
        net.load_state_dict(module.best_state)
    elif module.kept_state() is not None:
        net.load_state_dict(module.kept_state())
    return net.cpu().eval(), module.history, module.loss_curve


def run_fit(trainer: L.Trainer, module: L.LightningModule, loader: Any, run_dir: Path, resume: bool) -> None:
    """``trainer.fit``, resuming from ``run_dir/checkpoints/last.ckpt`` (weights-only unpickler) when asked."""
    last = run_dir / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings():
        # Lightning's advice on dataloader workers does not apply: the data are in memory, already batched
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
        warnings.filterwarnings("ignore", message=".*LightningModule.*has parameters that were not used.*")
        warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
        # DDP looks for unused parameters (some models leave task prompts or heads unused in a step)
        warnings.filterwarnings("ignore", message=".*find_unused_parameters=True was specified.*")
        # a resumed run reuses its report folder on purpose
        warnings.filterwarnings("ignore", message=".*Experiment logs directory.*exists and is not empty.*")
        trainer.fit(module, train_dataloaders=loader, ckpt_path=str(last) if (resume and last.exists()) else None,
                    weights_only=True)


def make_trainer(run_dir: Path, *, device: torch.device, progress: bool, precision: str, max_epochs: int,
                 max_steps: int, grad_clip: float | None, steps_per_epoch: int, devices: int | list[int] = 1,
                 strategy: str = "auto", callbacks: list[Any] | None = None, num_nodes: int = 1,
                 save_every_epoch: bool = False, use_distributed_sampler: bool = True) -> L.Trainer:
    """A Lightning trainer as every hsikit training run uses it: resumable ``run_dir/checkpoints/last.ckpt``,
    progress through :class:`hsikit.training.progress.TrainingProgress` (a bar on a terminal, plain lines in logs),
    ``metrics.csv``, gradient-norm clipping, no sanity/validation loops (hsikit validates at the end of each
    training epoch itself).

    ``devices`` processes per node (CPU processes, or GPUs) on ``num_nodes`` nodes: more than one in total runs
    DDP ("auto"/"ddp": Lightning's DDP with unused-parameter detection; gloo on CPU, NCCL on GPUs; other Lightning
    strategy names are passed through, except the spawn/fork ones). ``device`` "cuda:N" with one device uses GPU N.
    Checkpoints, the CSV log and the progress bar belong to the global rank 0.

    ``save_every_epoch`` rewrites ``last.ckpt`` (atomically) after every epoch's end hooks, so a killed run resumes
    from its last finished epoch; otherwise Lightning 2.6 writes it only when fit ends and a module that wants to
    be resumable saves it itself (as the SpectralGPT modules do). ``use_distributed_sampler`` False stops Lightning
    from sharding map-style loaders (a loader whose batches are already keyed by rank and step)."""
    import logging

    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from hsikit.training.progress import TrainingProgress

    # Lightning's start-up banners (accelerators found, logger tips) are noise in a CLI tool's output
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if save_every_epoch:  # save_last with save_top_k=0 writes last.ckpt only when training ends
        last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                               save_last=False, enable_version_counter=False, save_on_train_epoch_end=True)
    else:
        last = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                               enable_version_counter=False)
    cbs: list[Any] = [last, *(callbacks or [])]
    if progress:  # hsikit's reporter: a bar on a terminal, plain lines in logs
        cbs.append(TrainingProgress())
    if device.type == "cuda" and device.index is not None and devices == 1:
        devices = [device.index]
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=devices, num_nodes=int(num_nodes),
        strategy=_strategy(strategy, world_size(devices, num_nodes)),
        precision=precision, max_epochs=max_epochs, max_steps=max_steps, callbacks=cbs,
        logger=CSVLogger(str(run_dir), name="", version=""), enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=grad_clip,
        gradient_clip_algorithm="norm", default_root_dir=str(run_dir),
        log_every_n_steps=max(1, min(50, steps_per_epoch)), deterministic=False,
        use_distributed_sampler=use_distributed_sampler,
    )


def _strategy(name: str, world: int) -> Any:
    """Lightning strategy for ``name``: DDP that tolerates parameters unused in a step when several processes
    run ("auto"/"ddp"); one process otherwise; other names as Lightning knows them."""
    from lightning.pytorch.strategies import DDPStrategy

    from hsikit.errors import OptionError

    name = (name or "auto").lower()
    if any(k in name for k in ("spawn", "fork", "notebook")):
        raise OptionError(f"--strategy {name} is not supported: hsikit's training modules keep their history and "
                          "best weights in the process that trains, which spawned/forked ranks do not hand back; "
                          "use ddp (the default with --devices > 1), which also works under torchrun")
    if name in ("auto", "ddp"):
        if world <= 1:
            return "auto"
        return DDPStrategy(find_unused_parameters=True)
    if world <= 1 and name.startswith("ddp"):
        raise OptionError(f"--strategy {name} needs more than one process: give --devices 2 or more")
    return name
