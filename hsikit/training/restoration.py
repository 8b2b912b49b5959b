"""Training of restoration models (denoising, super-resolution, all-in-one restoration) with Lightning.

Clean scenes are held in memory as ``(C, H, W)`` float32 cubes scaled to [0, 1]; every optimiser step draws a
batch of random crops, degrades each one on the fly (:mod:`hsikit.restoration.degradations`) and regresses the
clean crop. Validation uses fixed crops degraded once with a fixed seed, so its PSNR is comparable across
epochs. Each architecture's recipe (optimiser, loss, schedule, crop, batch) is in :data:`RESTORATION_RECIPES`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from hsikit.errors import InputError
from hsikit.training.module import RunState
from hsikit.training.run import Run

#: one training pair: degraded input (C, h, w), clean target (C, s*h, s*w), task index (-1: none)
Pair = tuple[np.ndarray, np.ndarray, int]
#: degrades a clean crop with a generator; returns (input, task index)
DegradeFn = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, int]]


@dataclass
class RestorationRecipe:
    """How one restoration architecture trains. ``iterations`` is the optimiser-step budget; an "epoch" is
    ``steps_per_epoch`` steps followed by a validation pass. ``schedule``: "cosine" (to ``min_lr``),
    "warmup-cosine" (linear warm-up over ``warmup`` of the budget, then cosine) or "none". ``loss``: "mse",
    "l1" or "l1-clamp" (L1 between the clamped output and the target, MP-HSIR)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    min_lr: float = 1e-6
    warmup: float = 0.0
    loss: str = "mse"
    batch_size: int = 4
    crop: int = 64
    iterations: int = 2000
    steps_per_epoch: int = 50
    grad_clip: float | None = None
    augment: bool = True
    select_best: bool = False
    spectral_window: int | None = None
    seed: int = 0

    def replace(self, **changes: Any) -> "RestorationRecipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


RESTORATION_RECIPES: dict[str, RestorationRecipe] = {
    # Lai et al. 2023: Adam, MSE, batch 16 of 64x64 crops, seed 2018. The paper's 80-epoch step schedule is
    # replaced by cosine decay over the step budget (short CPU budgets); batch 4 on CPU. Its 3-D convolutions
    # work for any band count: it trains on 31-band runs as in the paper and runs on all bands at inference.
    "hsdt": RestorationRecipe(optimizer="adam", lr=1e-3, loss="mse", batch_size=4, crop=64, spectral_window=31,
                              seed=2018),
    # ESSAformer has no published training code, so these are hsikit's choices, not the paper's: L1, Adam
    # (0.9, 0.999) lr 1e-4, cosine to 1e-6, batch 16 (GPU) / 4 (CPU), flips and rotations.
    "essaformer": RestorationRecipe(optimizer="adam", lr=1e-4, loss="l1", batch_size=4, crop=64, seed=0),
    # Wu et al. 2025: AdamW (wd 0.01), L1 on the clamped output, linear warm-up over 10 % then cosine to 1e-6,
    # peak 2e-4 (natural) / 1e-4 (remote), batch 32, patch 64, seed 2024.
    "mp-hsir": RestorationRecipe(optimizer="adamw", lr=2e-4, weight_decay=0.01, schedule="warmup-cosine",
                                 warmup=0.1, loss="l1-clamp", batch_size=4, crop=64, seed=2024),
}


def restoration_recipe(arch: str) -> RestorationRecipe:
    return dataclasses.replace(RESTORATION_RECIPES.get(arch, RestorationRecipe()))


# -- data ------------------------------------------------------------------------------------------------------------
def random_crop(cubes: Sequence[np.ndarray], valids: Sequence[np.ndarray], size: int, rng: np.random.Generator,
                tries: int = 30) -> np.ndarray:
    """A ``size``×``size`` crop (C, size, size) of a cube drawn with probability proportional to its area,
    preferring crops without invalid pixels (the fully valid one found in ``tries`` draws, else the most valid)."""
    areas = np.array([c.shape[1] * c.shape[2] for c in cubes], dtype=np.float64)
    best, best_frac = None, -1.0
    for _ in range(tries):
        k = int(rng.choice(len(cubes), p=areas / areas.sum()))
        c, v = cubes[k], valids[k]
        r = int(rng.integers(0, c.shape[1] - size + 1))
        q = int(rng.integers(0, c.shape[2] - size + 1))
        frac = float(v[r : r + size, q : q + size].mean())
        if frac > best_frac:
            best, best_frac = c[:, r : r + size, q : q + size], frac
        if frac == 1.0:
            break
    return np.ascontiguousarray(best)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the 8 rot90/flip modes, drawn uniformly."""
    k = int(rng.integers(0, 8))
    y = np.rot90(x, k % 4, axes=(1, 2))
    return np.ascontiguousarray(y[:, :, ::-1] if k >= 4 else y)


class CropBatches(IterableDataset):
    """``steps`` batches per epoch on every rank. Batch k of the epoch that starts at optimiser step ``start`` is
    drawn from a generator seeded with (seed, (start + k) * world + rank): one process draws (seed, 0), (seed,
    1), ... over the run, ranks draw disjoint streams, and a resumed run continues where it stopped (the
    module sets ``start`` from its global step at each epoch start)."""

    def __init__(self, cubes, valids, degrade: DegradeFn, recipe: RestorationRecipe, steps: int) -> None:
        self.cubes, self.valids, self.degrade, self.recipe, self.steps = cubes, valids, degrade, recipe, steps
        self.start = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        from hsikit.training.distributed import shard_info

        rank, world = shard_info()
        for k in range(self.steps):
            yield self.batch((self.start + k) * world + rank)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch ``i`` of the current epoch as one process draws it."""
        return self.batch(self.start + int(i))

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch with draw index ``index`` (a pure function of the seed and the index)."""
        rng = np.random.default_rng([self.recipe.seed, int(index)])
        xs, ys, ts = [], [], []
        for _ in range(self.recipe.batch_size):
            clean = random_crop(self.cubes, self.valids, self.recipe.crop, rng)
            win = self.recipe.spectral_window
            if win and win < clean.shape[0]:
                b0 = int(rng.integers(0, clean.shape[0] - win + 1))
                clean = clean[b0 : b0 + win]
            if self.recipe.augment:
                clean = augment(clean, rng)
            x, t = self.degrade(clean, rng)
            xs.append(x)
            ys.append(clean)
            ts.append(t)
        return (torch.from_numpy(np.stack(xs)).float(), torch.from_numpy(np.stack(ys)).float(),
                torch.tensor(ts, dtype=torch.long))




def validation_pairs(cubes, valids, degrade: DegradeFn, crop: int, count: int, seed: int) -> list[Pair]:
    """Fixed validation pairs: ``count`` crops degraded once with generators seeded from ``seed``."""
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, 10_000 + i])
        clean = random_crop(cubes, valids, crop, rng)
        x, t = degrade(clean, rng)
        out.append((x, clean, t))
    return out


def check_crop(cubes: Sequence[np.ndarray], crop: int) -> int:
    """The crop size to use: ``crop``, shrunk to the smallest scene side (with a clear error if tiny)."""
    side = min(min(c.shape[1], c.shape[2]) for c in cubes)
    if side < 8:
        raise InputError(f"training scenes must be at least 8×8 px; the smallest is {side} px on a side")
    return min(int(crop), side)


# -- Lightning -------------------------------------------------------------------------------------------------------
def forward_restorer(net: torch.nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """Call ``net``; prompt-driven models (``net.takes_task``) also get the task index of every sample."""
    return net(x, task) if getattr(net, "takes_task", False) else net(x)


class RestorationModule(RunState, L.LightningModule):
    """Regress clean crops from degraded ones; validation PSNR (dB, per-band mean) after every epoch."""

    def __init__(self, net: torch.nn.Module, recipe: RestorationRecipe, val: list[Pair], total_steps: int) -> None:
        super().__init__()
        self.net, self.recipe, self.val = net, recipe, val
        self.total_steps = max(1, int(total_steps))
        self.start_state()
        self.stream: CropBatches | None = None

    def on_train_epoch_start(self) -> None:
        if self.stream is not None:  # batches are keyed by optimiser step: resumed runs draw what they would have
            self.stream.start = int(self.global_step)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, t = batch
        out = forward_restorer(self.net, x, t)
        if self.recipe.loss == "mse":
            loss = F.mse_loss(out, y)
        elif self.recipe.loss == "l1":
            loss = F.l1_loss(out, y)
        elif self.recipe.loss == "l1-clamp":
            loss = F.l1_loss(out.clamp(0, 1), y)
        else:
            raise ValueError(f"unknown loss {self.recipe.loss!r}")
        v = float(loss.detach())
        self._epoch_loss.append(v)
        self.loss_curve.append(v)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    @torch.no_grad()
    def validation_psnr(self) -> float:
        from hsikit.restoration.quality import psnr

        if not self.val:
            return float("nan")
        was = self.net.training
        self.net.eval()
        vals = []
        for x, y, t in self.val:
            xt = torch.from_numpy(x)[None].to(self.device)
            out = forward_restorer(self.net, xt, torch.tensor([t], device=self.device))[0].float().cpu().numpy()
            vals.append(psnr(y, np.clip(out, 0, 1)))
        self.net.train(was)
        return float(np.mean(vals))

    def on_train_epoch_end(self) -> None:
        loss = float(np.mean(self._epoch_loss)) if self._epoch_loss else float("nan")
        self._epoch_loss = []
        val = self.validation_psnr()
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else float("nan")
        self.history.append({"epoch": len(self.history) + 1, "step": int(self.global_step), "train_loss": loss,
                             "val_psnr": val, "lr": lr})
        self.log("val_psnr", val if math.isfinite(val) else 0.0, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        score = val if math.isfinite(val) else -loss
        if self.recipe.select_best and score > self.best_score:
            self.best_score = score
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def configure_optimizers(self) -> Any:
        r = self.recipe
        if r.optimizer == "adam":
            opt = torch.optim.Adam(self.net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
        elif r.optimizer == "adamw":
            opt = torch.optim.AdamW(self.net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {r.optimizer!r}")
        if r.schedule == "none":
            return opt
        total, floor = self.total_steps, min(1.0, r.min_lr / r.lr)
        warm = int(round(r.warmup * total)) if r.schedule == "warmup-cosine" else 0
        if r.schedule not in ("cosine", "warmup-cosine"):
            raise ValueError(f"unknown schedule {r.schedule!r}")

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            p = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit_restorer(
    net: torch.nn.Module,
    cubes: Sequence[np.ndarray],
    valids: Sequence[np.ndarray],
    degrade: DegradeFn,
    recipe: RestorationRecipe,
    val: list[Pair],
    *,
    run: Run,
) -> tuple[torch.nn.Module, list[dict[str, float]], list[float]]:
    """Train for ``recipe.iterations`` steps in the started ``run`` (its device, precision, processes, report
    folder and resume); returns (network, per-epoch history, per-step loss).

    With several processes (DDP) each optimiser step averages the gradients of one batch per rank (effective
    batch world x ``recipe.batch_size``, the ranks' crops disjoint); steps, epochs and learning rate are the
    recipe's."""
    steps = max(1, min(int(recipe.steps_per_epoch), int(recipe.iterations)))
    module = RestorationModule(net, recipe, val, recipe.iterations)
    trainer = run.trainer(max_epochs=-1, max_steps=int(recipe.iterations), grad_clip=recipe.grad_clip,
                          steps_per_epoch=steps, save_every_epoch=True)
    module.stream = CropBatches(cubes, valids, degrade, recipe, steps)
    loader = DataLoader(module.stream, batch_size=None, shuffle=False)
    run.fit(trainer, module, loader)
    if recipe.select_best and module.best_state is not None:
        net.load_state_dict(module.best_state)
    return net.cpu().eval(), module.history, module.loss_curve
