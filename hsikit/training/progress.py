"""Training progress through hsikit's one reporter (:class:`hsikit.progress.Progress`): a live bar on a terminal,
plain lines every 10 % or 30 s in logs, with the latest loss and validation score."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from hsikit.progress import Progress

#: validation metrics the training modules log, shown beside the loss when present
_SCORES = (("score", "val OA", "{:.4f}"), ("val_oa", "val OA", "{:.4f}"), ("val_psnr", "val PSNR", "{:.2f} dB"),
           ("val_loss", "val loss", "{:.4g}"))


class TrainingProgress(L.Callback):
    """Reports optimiser steps of the global rank 0 (the total is the step budget, or epochs x steps per epoch:
    early stopping may end sooner). A resumed run starts from the step it resumes at."""

    def __init__(self, label: str = "training") -> None:
        self.label = label
        self.bar: Progress | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total: Any = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None:
            try:
                total = trainer.estimated_stepping_batches
            except Exception:  # noqa: BLE001 - a loader without a length: no total, lines every 30 s
                total = None
        total = int(total) if total is not None and math.isfinite(total) else None
        self.bar = Progress(True, total, self.label, unit="steps").__enter__()
        self.bar.done = int(trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is not None:
            self.bar.advance(1, note=_note(trainer.callback_metrics))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close(None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close(type(exception))

    def _close(self, exc_type: type | None) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.__exit__(exc_type, None, None)


def _note(metrics: dict[str, Any]) -> str:
    parts = []
    loss = metrics.get("train_loss")
    if loss is not None:
        parts.append(f"loss {float(loss):.4g}")
    shown = set()
    for key, name, fmt in _SCORES:
        if key in metrics and name not in shown:
            shown.add(name)
            parts.append(f"{name} {fmt.format(float(metrics[key]))}")
    return ", ".join(parts)
