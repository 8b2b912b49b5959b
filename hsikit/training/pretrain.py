"""Masked-autoencoder pretraining of SpectralGPT with Lightning, on windows streamed from scenes.

Scenes are never loaded whole: :class:`WindowSampler` reads random windows through ``Scene.read(window)``, each
through its scene's preprocessing transform (band selection or spectral resampling, scaling, normalisation),
preferring windows without nodata. Augmentation follows the paper: a random resized crop (area 20-100 % of an
``img_size`` chip, aspect 3/4-4/3, bicubic back to ``img_size``) and a horizontal flip of the whole band stack.

The batch of global step ``s`` is drawn from a generator seeded with ``(seed, rank, s)``, and its mask comes from a
seed drawn there too, so a resumed run sees exactly the batches and masks of an uninterrupted one. Recipe (the
official code's): AdamW (0.9, 0.95), weight decay 0.05 except biases and norm weights, linear warm-up over 10 %
then half-cosine to 0; peak lr 1.5e-3 at the CPU batch of 16, or the paper's base lr x batch / 256
(see :class:`PretrainRecipe`).

Distributed data parallel (``devices`` x ``num_nodes`` > 1): every rank draws its own ``batch_size`` windows per
step (the rank is in the seed), so one optimiser step averages the gradients of ``world x batch_size`` windows;
the step count, schedule and learning rate are the recipe's. Each rank runs the same number of steps (the
placeholder loader is not sharded by Lightning), validation is computed identically on every rank, and only rank 0
writes the resumable checkpoint and previews.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch.utils.data import DataLoader

from hsikit.io.scene import Scene
from hsikit.training.module import RunState
from hsikit.training.run import Run

#: raw window (B, h, w) and its validity (h, w) -> model input (C, h, w) float32, invalid pixels 0
Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PretrainRecipe:
    """MAE pretraining budget and optimiser. ``steps`` optimiser steps, with a validation pass and a history row
    every ``steps_per_epoch``.

    Peak learning rate: ``lr`` when set, else the paper's rule ``base_lr * batch_size / 256`` (base 2e-4: 3.2e-3 at
    its batch of 4096). At a CPU batch of 16 that rule gives 1.25e-5, far too small for budgets of a few thousand
    steps, so hsikit's default is ``lr = 1.5e-3`` (the benchmark's setting); set ``lr=None`` to apply the rule.
    ``world`` is the number of DDP processes: the rule counts the global batch ``batch_size * world``."""

    steps: int = 2000
    steps_per_epoch: int = 100
    batch_size: int = 16
    base_lr: float = 2e-4
    lr: float | None = 1.5e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: float = 0.1
    min_lr: float = 0.0
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: bool = True
    grad_clip: float | None = None
    val_batches: int = 2
    seed: int = 0
    world: int = 1

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr else float(self.base_lr) * self.batch_size * max(1, self.world) / 256

    def replace(self, **changes: Any) -> "PretrainRecipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# -- streamed windows ------------------------------------------------------------------------------------------------
class WindowSampler:
    """Random windows of ``scenes`` (drawn in proportion to their area), read on demand and transformed.

    ``size``: output side (the model's ``img_size``); ``chip``: the side of the scene region one sample stands for
    (default ``size``); a random resized crop of ``scale`` (area fraction) and ``ratio`` (aspect) of it is read
    and resized bicubically to ``size``. Up to ``tries`` windows are drawn until one has no invalid pixel; else
    the most valid one is used (invalid pixels 0).
    """

    def __init__(self, scenes: Sequence[Scene], transforms: Sequence[Transform], size: int, *, chip: int | None = None,
                 scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 hflip: bool = True, tries: int = 20) -> None:
        if not scenes:
            raise ValueError("no scene to sample from")
        self.scenes, self.transforms = list(scenes), list(transforms)
        self.size, self.chip = int(size), int(chip or size)
        self.scale, self.ratio, self.hflip, self.tries = scale, ratio, hflip, int(tries)
        areas = np.array([s.width * s.height for s in self.scenes], dtype=np.float64)
        self.p = areas / areas.sum()
        self.invalid_windows = 0

    def window(self, k: int, rng: np.random.Generator) -> Window:
        sc = self.scenes[k]
        ch, cw = min(self.chip, sc.height), min(self.chip, sc.width)
        area = ch * cw * rng.uniform(*self.scale)
        aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = int(np.clip(round(math.sqrt(area * aspect)), 1, cw))
        h = int(np.clip(round(math.sqrt(area / aspect)), 1, ch))
        r0 = int(rng.integers(0, sc.height - h + 1))
        c0 = int(rng.integers(0, sc.width - w + 1))
        return Window(c0, r0, w, h)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One sample ``(C, size, size)`` float32."""
        best = None
        for _ in range(self.tries):
            k = int(rng.choice(len(self.scenes), p=self.p))
            win = self.window(k, rng)
            raw = self.scenes[k].read(win)
            valid = self.scenes[k].read_valid(win, raw)
            frac = float(valid.mean())
            if best is None or frac > best[0]:
                best = (frac, k, raw, valid)
            if frac == 1.0:
                break
        frac, k, raw, valid = best
        if frac < 1.0:
            self.invalid_windows += 1
        x = self.transforms[k](raw, valid)
        x[:, ~valid] = 0.0
        x = resize(x, self.size)
        if self.hflip and rng.random() < 0.5:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x, dtype=np.float32)

    def batch(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([self.draw(rng) for _ in range(n)])


def resize(x: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` resized bicubically to ``size`` (unchanged when it already has that size)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if x.shape[1:] == hw:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    return F.interpolate(t, size=hw, mode="bicubic", align_corners=False)[0].numpy()


def step_loader(steps_per_epoch: int) -> DataLoader:
    """A loader of ``steps_per_epoch`` placeholder items: the batches themselves are drawn in the training step
    from the global step (see :class:`StepKeyedModule`), so their content never depends on loader state."""
    return DataLoader(list(range(int(steps_per_epoch))), batch_size=None)


# -- optimisation ----------------------------------------------------------------------------------------------------
def warmup_cosine(total: int, warmup: float, floor: float = 0.0) -> Callable[[int], float]:
    """lr factor per step: linear warm-up over ``warmup`` of ``total``, then half-cosine down to ``floor``."""
    warm = int(round(warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        p = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))

    return factor


def decay_groups(net: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: weight decay on everything but biases and 1-D (norm) weights."""
    decay, plain = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


# -- Lightning -------------------------------------------------------------------------------------------------------
Draw = Callable[[np.random.Generator], tuple[np.ndarray, ...]]


class StepKeyedModule(RunState, L.LightningModule):
    """Base of the SpectralGPT training modules.

    The batch of global step ``s`` on rank ``r`` is ``draw(rng)`` with a generator seeded by ``(seed, r, s)``
    (plus a mask seed drawn from it), so a resumed run trains on exactly the batches of an uninterrupted one.
    At the last batch of every loader pass ("epoch") and at the last step, :meth:`epoch_end` records history
    and validation, then the resumable ``ckpt_path`` (``checkpoints/last.ckpt``) is written atomically, with that
    row in it. Lightning resumes cleanly from a checkpoint written at the end of an epoch's last batch; the
    trainer's own ModelCheckpoint (``save_top_k=0``) writes last.ckpt only when fit finishes under Lightning 2.6.
    """

    def __init__(self, draw: Draw, seed: int, total_steps: int, ckpt_path: Path | None) -> None:
        super().__init__()
        self.draw, self.seed = draw, int(seed)
        self.total_steps = max(1, int(total_steps))
        self.ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
        self.start_state()
        self.steps_run = 0  # optimiser steps of this process (not restored on resume)
        self.last_batch_sum = float("nan")  # checksum of this rank's latest input batch

    def step_batch(self) -> tuple[list[torch.Tensor], int]:
        rng = np.random.default_rng([self.seed, int(self.global_rank), int(self.global_step)])
        arrays = self.draw(rng)
        self.last_batch_sum = float(np.sum(arrays[0], dtype=np.float64))
        return [torch.from_numpy(a).to(self.device) for a in arrays], int(rng.integers(0, 2**62))

    def epoch_end(self) -> None:
        raise NotImplementedError

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        last_of_pass = batch_idx + 1 >= int(self.trainer.num_training_batches)
        if last_of_pass or self.global_step >= self.total_steps:
            self.epoch_end()
            self.save_resumable()

    def save_resumable(self) -> None:
        if self.ckpt_path is None:
            return
        lead = self.trainer.is_global_zero
        if lead:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name(f".{self.ckpt_path.name}.tmp")
        self.trainer.save_checkpoint(tmp)  # every rank calls it (it synchronises); only rank 0 writes
        if lead:
            os.replace(tmp, self.ckpt_path)

    def rank_batch_sums(self) -> list[float]:
        """Checksum of the latest input batch of every rank (one value without DDP): shows the ranks' data differ."""
        if self.trainer.world_size <= 1:
            return [self.last_batch_sum]
        import torch.distributed as dist

        mine = torch.tensor([self.last_batch_sum], dtype=torch.float64, device=self.device)
        got = [torch.zeros_like(mine) for _ in range(self.trainer.world_size)]
        dist.all_gather(got, mine)  # the plain collective: Lightning's all_gather warns of a deprecated torch path
        return [float(v) for v in torch.cat(got).cpu()]

    def current_lr(self) -> float:
        opts = self.trainer.optimizers
        return float(opts[0].param_groups[-1]["lr"]) if opts else float("nan")


ValBatch = tuple[torch.Tensor, int]  # (x (n, C, s, s), mask seed)
Preview = Callable[[torch.nn.Module, int], None]


class PretrainModule(StepKeyedModule):
    """Minimise the two-term reconstruction loss; per epoch, the loss on fixed validation batches and masks."""

    def __init__(self, net: torch.nn.Module, recipe: PretrainRecipe, val: list[ValBatch], draw: Draw,
                 ckpt_path: Path | None = None, preview: Preview | None = None, preview_every: int = 0) -> None:
        super().__init__(draw, recipe.seed, recipe.steps, ckpt_path)
        self.net, self.recipe, self.val = net, recipe, val
        self.preview, self.preview_every = preview, int(preview_every or 0)
        self._epoch: list[tuple[float, float, float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,), mseed = self.step_batch()
        out = self.net(x, generator=torch.Generator().manual_seed(mseed))
        vals = (float(out.loss.detach()), float(out.loss_token.detach()), float(out.loss_spectral.detach()))
        self._epoch.append(vals)
        self.loss_curve.append(vals[0])
        self.steps_run += 1
        self.log("train_loss", out.loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return out.loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (self.preview is not None and self.preview_every and self.global_step % self.preview_every == 0
                and self.trainer.is_global_zero):
            self.preview(self.net, int(self.global_step))
        super().on_train_batch_end(outputs, batch, batch_idx)

    @torch.no_grad()
    def validation_losses(self) -> tuple[float, float, float]:
        if not self.val:
            return (float("nan"),) * 3
        was = self.net.training
        self.net.eval()
        vals = []
        for x, mseed in self.val:
            out = self.net(x.to(self.device), generator=torch.Generator().manual_seed(int(mseed)))
            vals.append((float(out.loss), float(out.loss_token), float(out.loss_spectral)))
        self.net.train(was)
        return tuple(float(v) for v in np.mean(vals, axis=0))

    def epoch_end(self) -> None:
        tr = np.mean(self._epoch, axis=0) if self._epoch else np.full(3, np.nan)
        self._epoch = []
        val = self.validation_losses()
        self.history.append({"epoch": len(self.history) + 1, "step": int(self.global_step),
                             "train_loss": float(tr[0]), "train_loss_token": float(tr[1]),
                             "train_loss_spectral": float(tr[2]), "val_loss": val[0], "val_loss_token": val[1],
                             "val_loss_spectral": val[2], "lr": self.current_lr(),
                             "rank_batch_sums": self.rank_batch_sums()})

    def configure_optimizers(self) -> Any:
        r = self.recipe
        opt = torch.optim.AdamW(decay_groups(self.net, r.weight_decay), lr=r.peak_lr, betas=tuple(r.betas),
                                foreach=True)  # one fused pass over the many small tensors (also on CPU)
        floor = min(1.0, r.min_lr / r.peak_lr) if r.peak_lr > 0 else 0.0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.total_steps, r.warmup, floor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def validation_batches(sampler: WindowSampler, recipe: PretrainRecipe) -> list[ValBatch]:
    """Fixed validation batches (and mask seeds) drawn once from ``sampler`` with the recipe's seed."""
    out = []
    for i in range(int(recipe.val_batches)):
        rng = np.random.default_rng([recipe.seed, 999_999, i])
        out.append((torch.from_numpy(sampler.batch(recipe.batch_size, rng)), int(rng.integers(0, 2**62))))
    return out


class FitResult(NamedTuple):
    net: torch.nn.Module
    history: list[dict[str, float]]
    loss_curve: list[float]
    steps_run: int  # steps trained by this call (a resumed run's earlier steps excluded)
    seconds: float  # wall time of trainer.fit


def fit_pretrain(net: torch.nn.Module, sampler: WindowSampler, recipe: PretrainRecipe, val: list[ValBatch], *,
                 run: Run, preview: Preview | None = None, preview_every: int = 0) -> FitResult:
    """Pretrain for ``recipe.steps`` optimiser steps with the compute options of ``run`` (started); returns the
    network (CPU, eval), per-epoch history, per-step loss (of this rank), steps trained here and seconds.
    Resumes from ``<run.dir>/checkpoints/last.ckpt`` when the run resumes; ``preview(net, step)`` runs every
    ``preview_every`` steps on rank 0. More than one process trains with DDP (see the module notes)."""
    steps = max(1, min(int(recipe.steps_per_epoch), int(recipe.steps)))
    module = PretrainModule(net, recipe, val, lambda rng: (sampler.batch(recipe.batch_size, rng),),
                            run.dir / "checkpoints" / "last.ckpt", preview=preview, preview_every=preview_every)
    trainer = run.trainer(max_steps=int(recipe.steps), grad_clip=recipe.grad_clip, steps_per_epoch=steps,
                          use_distributed_sampler=False)  # batches are keyed by (rank, step): never shard them
    t0 = time.perf_counter()
    run.fit(trainer, module, step_loader(steps))
    seconds = time.perf_counter() - t0
    return FitResult(net.cpu().eval(), module.history, module.loss_curve, module.steps_run, seconds)
