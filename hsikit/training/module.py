"""Lightning module and fit loop for classifiers: checkpoint/resume, mixed precision, early stopping, progress
bars and DDP come from Lightning; the recipe picks the optimiser and schedule of each paper."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hsikit.training.data import ClassifierData
from hsikit.training.recipes import Recipe


class RunState:
    """Per-epoch history, per-step losses and the best weights so far, carried in Lightning's resumable
    checkpoint. The training data are not part of it; only weights, optimiser, schedule and loop state are."""

    history: list[dict[str, float]]
    loss_curve: list[float]
    best_state: dict[str, torch.Tensor] | None
    best_score: float

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hsikit_history"] = self.history
        checkpoint["hsikit_loss_curve"] = self.loss_curve
        checkpoint["hsikit_best"] = self.best_state
        checkpoint["hsikit_best_score"] = self.best_score

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("hsikit_history", []))
        self.loss_curve = list(checkpoint.get("hsikit_loss_curve", []))
        self.best_state = checkpoint.get("hsikit_best")
        self.best_score = float(checkpoint.get("hsikit_best_score", -math.inf))


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
        self.history: list[dict[str, float]] = []
        self._epoch_loss: list[float] = []
        self.loss_curve: list[float] = []  # every optimiser step's loss
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_score = -math.inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.data.loss(self.net, batch)
        self._epoch_loss.append(float(loss.detach()))
        self.loss_curve.append(self._epoch_loss[-1])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=1)
        return loss

    def on_train_epoch_end(self) -> None:
        loss = float(np.mean(self._epoch_loss)) if self._epoch_loss else float("nan")
        self._epoch_loss = []
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
        self.log("val_oa", val_oa if self.val_y.size else 0.0, prog_bar=True)
        self.log("score", score)
        if self.recipe.select_best and score > self.best_score:
            self.best_score = score
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.net.state_dict().items()})

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



def fit(
    net: torch.nn.Module,
    data: ClassifierData,
    recipe: Recipe,
    val_mask: np.ndarray,
    *,
    device: torch.device,
    run_dir: Path,
    progress: bool = True,
    precision: str = "32-true",
    resume: bool = False,
    devices: int = 1,
    strategy: str = "auto",
) -> tuple[torch.nn.Module, list[dict[str, float]], list[float]]:
    """Train ``net`` with Lightning; returns the network to keep (best-on-validation or last, per the recipe),
    the per-epoch history and the loss of every optimiser step. Lightning's own resumable checkpoint is ``run_dir/checkpoints/last.ckpt``
    (loaded back with torch's weights-only unpickler); the model users get is the safetensors file."""
    from lightning.pytorch.callbacks import EarlyStopping

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
    trainer = make_trainer(run_dir, device=device, progress=progress, precision=precision, max_epochs=max_epochs,
                           max_steps=max_steps, grad_clip=recipe.grad_clip, steps_per_epoch=steps_per_epoch,
                           devices=devices, strategy=strategy, callbacks=extra)
    run_fit(trainer, module, data.train_loader(), run_dir, resume)
    if recipe.select_best and module.best_state is not None:
        net.load_state_dict(module.best_state)
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
        trainer.fit(module, train_dataloaders=loader, ckpt_path=str(last) if (resume and last.exists()) else None,
                    weights_only=True)


def make_trainer(run_dir: Path, *, device: torch.device, progress: bool, precision: str, max_epochs: int,
                 max_steps: int, grad_clip: float | None, steps_per_epoch: int, devices: int = 1,
                 strategy: str = "auto", callbacks: list[Any] | None = None) -> L.Trainer:
    """A Lightning trainer as every hsikit training run uses it: resumable ``run_dir/checkpoints/last.ckpt``,
    Rich progress bar, ``metrics.csv``, gradient-norm clipping, no sanity/validation loops (hsikit validates
    at the end of each training epoch itself)."""
    import logging

    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    # Lightning's start-up banners (accelerators found, logger tips) are noise in a CLI tool's output
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cbs: list[Any] = [ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0), *(callbacks or [])]
    if progress:
        cbs.append(RichProgressBar(leave=True))
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=devices, strategy=strategy,
        precision=precision, max_epochs=max_epochs, max_steps=max_steps, callbacks=cbs,
        logger=CSVLogger(str(run_dir), name="", version=""), enable_progress_bar=progress,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=grad_clip,
        gradient_clip_algorithm="norm", default_root_dir=str(run_dir),
        log_every_n_steps=max(1, min(50, steps_per_epoch)), deterministic=False,
    )
