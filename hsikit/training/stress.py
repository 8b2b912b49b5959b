"""Training of the FFDNN crop-stress model on filtered pixel time series ``(N, F, T)`` with Lightning.

Recipe (hsikit's decisions; the paper's recipe is not recoverable): margin loss (m⁺ 0.9, m⁻ 0.1, λ 0.5) on
the class-capsule lengths, Adam (lr 1e-3, weight decay 1e-4), batch 64, cosine decay to 1e-5 over the run,
class-balanced sampling, early stopping on the validation loss (patience 20) and the best-validation weights
kept. One addition, flagged in reports: random time shifts of up to ``time_shift`` grid steps per training
sample (edges held), since field-to-field differences in sowing date shift the whole season curve.
The split (by field) and the data are the caller's; this module only trains.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from hsikit.training.module import RunState
from hsikit.training.run import Run


@dataclass
class StressRecipe:
    """How FFDNN trains; ``epochs`` is the upper bound when early stopping does not end the run first."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 150
    min_lr: float = 1e-5
    patience: int = 20
    m_pos: float = 0.9
    m_neg: float = 0.1
    lam: float = 0.5
    balanced: bool = True
    time_shift: int = 2
    select_best: bool = True
    grad_clip: float | None = None
    seed: int = 0

    def replace(self, **changes: Any) -> "StressRecipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def shift_series(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each sample of ``x`` (N, F, T) by ``shifts`` (N,) steps along time (positive: later), holding the
    edge values."""
    t = x.shape[-1]
    idx = (torch.arange(t, device=x.device)[None, :] - shifts[:, None].to(x.device)).clamp(0, t - 1)
    return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))


def epoch_steps(n: int, batch_size: int, world: int = 1) -> tuple[int, bool]:
    """(optimiser steps of one epoch on each rank, drop_last) for ``n`` training samples shared by ``world``
    ranks: Lightning's DistributedSampler gives every rank ``ceil(n / world)`` samples (padding the last share),
    and a last batch of one sample is dropped (BatchNorm needs two). Without the drop the steps equal
    :func:`hsikit.training.module.sharded_steps` of the one-process count."""
    share = -(-int(n) // max(1, int(world)))
    bs = int(batch_size)
    drop = share % bs == 1
    return max(1, share // bs if drop else -(-share // bs)), drop


class EpochSampler(Sampler[int]):
    """``len(weights)`` indices per epoch: drawn with replacement at probability ∝ ``weights`` (class-balanced
    sampling), or a permutation when ``weights`` is None. Each epoch's draw depends only on (``seed``, epoch), so
    every DDP rank draws the same list (Lightning's sampler wrapper then gives each rank its share, and forwards
    ``set_epoch``) and a resumed run draws what the uninterrupted run would have."""

    def __init__(self, n: int, weights: torch.Tensor | None, seed: int) -> None:
        self.n, self.weights, self.seed, self.epoch = int(n), weights, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        return iter(idx.tolist())


def balanced_loader(x: np.ndarray, y: np.ndarray, recipe: StressRecipe, world: int = 1) -> DataLoader:
    """Minibatches of (x, y); with ``recipe.balanced`` drawn with replacement at probability 1/count(class),
    so every class is seen equally often; seeded per epoch. ``world`` ranks: the batch bookkeeping (drop_last)
    is that of each rank's share, which Lightning's distributed sampler cuts from the one-process epoch."""
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    n, bs = len(yt), int(recipe.batch_size)
    _, drop = epoch_steps(n, bs, world)
    w = None
    if recipe.balanced:
        counts = np.bincount(y, minlength=int(y.max()) + 1).astype(np.float64)
        w = torch.from_numpy(1.0 / counts[y])
    return DataLoader(TensorDataset(xt, yt), batch_size=bs, sampler=EpochSampler(n, w, recipe.seed), drop_last=drop)


@torch.no_grad()
def predict_lengths(net: torch.nn.Module, x: np.ndarray, device: torch.device, chunk: int = 8192) -> np.ndarray:
    """Capsule lengths (N, K) of ``x`` (N, F, T) in chunks; the network is used as it is (train/eval mode)."""
    out = [net(torch.from_numpy(np.ascontiguousarray(x[s : s + chunk], dtype=np.float32)).to(device))
           .float().cpu().numpy() for s in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class StressModule(RunState, L.LightningModule):
    """Margin-loss training of an FFDNN; validation loss and OA on the validation fields after every epoch."""

    def __init__(self, net: torch.nn.Module, recipe: StressRecipe, val_x: np.ndarray, val_y: np.ndarray,
                 total_steps: int) -> None:
        super().__init__()
        self.net, self.recipe = net, recipe
        self.val_x, self.val_y = val_x, val_y.astype(np.int64)
        self.total_steps = max(1, int(total_steps))
        self.start_state()

    def loss(self, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from hsikit.models.ffdnn import margin_loss

        r = self.recipe
        return margin_loss(lengths.float(), y, r.m_pos, r.m_neg, r.lam)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        k = int(self.recipe.time_shift)
        if k > 0:
            # one stream per rank and step (unchanged in one process: world 1, rank 0)
            world = self.trainer.world_size
            g = torch.Generator().manual_seed(int(self.recipe.seed) * 1_000_003 + int(self.global_step) * world
                                              + int(self.global_rank))
            x = shift_series(x, torch.randint(-k, k + 1, (x.shape[0],), generator=g))
        loss = self.loss(self.net(x), y)
        v = float(loss.detach())
        self._epoch_loss.append(v)
        self.loss_curve.append(v)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def validate(self) -> tuple[float, float]:
        if not self.val_y.size:
            return float("nan"), float("nan")
        was = self.net.training
        self.net.eval()
        lengths = predict_lengths(self.net, self.val_x, self.device)
        self.net.train(was)
        lt = torch.from_numpy(lengths)
        val_loss = float(self.loss(lt, torch.from_numpy(self.val_y)))
        return val_loss, float((lengths.argmax(1) == self.val_y).mean())

    def on_train_epoch_end(self) -> None:
        loss = float(np.mean(self._epoch_loss)) if self._epoch_loss else float("nan")
        self._epoch_loss = []
        val_loss, val_oa = self.validate()
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else float("nan")
        self.history.append({"epoch": len(self.history) + 1, "step": int(self.global_step), "train_loss": loss,
                             "val_loss": val_loss, "val_oa": val_oa, "lr": lr})
        has_val = math.isfinite(val_loss)
        # every rank validates the same weights on all validation pixels; DDP broadcasts rank 0's BatchNorm
        # buffers, so the values may differ in the last digits: the mean makes early stopping agree on all ranks
        sync = self.trainer.world_size > 1
        self.log("val_loss", val_loss if has_val else loss, prog_bar=True, sync_dist=sync)
        self.log("val_oa", val_oa if has_val else 0.0, prog_bar=True, sync_dist=sync)
        score = -val_loss if has_val else -loss
        if self.recipe.select_best and score > self.best_score:
            self.best_score = score
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.net.state_dict().items()})

    def configure_optimizers(self) -> Any:
        r = self.recipe
        opt = torch.optim.Adam(self.net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
        total, floor = self.total_steps, min(1.0, r.min_lr / r.lr)

        def factor(step: int) -> float:
            p = min(1.0, step / total)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit_stress(
    net: torch.nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    recipe: StressRecipe,
    *,
    run: Run,
) -> tuple[torch.nn.Module, list[dict[str, float]], list[float]]:
    """Train ``net`` on (``train_x`` (N, F, T), ``train_y`` 0-based) with validation on (``val_x``, ``val_y``);
    returns (network, per-epoch history, loss of every step). ``last.ckpt`` in the run's
    ``<report>/checkpoints`` is rewritten after every epoch, so a killed run resumes (``--resume``) from its last
    finished epoch. The run (:class:`hsikit.training.run.Run`, started) gives the device, precision and processes.

    ``devices`` x ``num_nodes`` > 1 processes train with DDP: each rank takes its share of every epoch's
    balanced draw (1/world of the optimiser steps, a world-times larger effective batch, the same learning rate
    and a cosine schedule over the per-rank steps); early stopping decides on the rank mean of the validation
    loss. Every rank returns the network; only the global rank 0 should write it."""
    from lightning.pytorch.callbacks import EarlyStopping

    torch.manual_seed(int(recipe.seed))
    world = run.processes
    loader = balanced_loader(train_x, train_y, recipe, world)
    steps, _ = epoch_steps(len(train_y), int(recipe.batch_size), world)
    module = StressModule(net, recipe, val_x, val_y, steps * int(recipe.epochs))
    extra: list[Any] = []
    if len(val_y) and recipe.patience and recipe.patience > 0:
        extra.append(EarlyStopping(monitor="val_loss", mode="min", patience=int(recipe.patience),
                                   check_on_train_epoch_end=True))
    trainer = run.trainer(max_epochs=int(recipe.epochs), max_steps=-1, grad_clip=recipe.grad_clip,
                          steps_per_epoch=steps, callbacks=extra, save_every_epoch=True)
    run.fit(trainer, module, loader)
    if recipe.select_best and module.best_state is not None:
        net.load_state_dict(module.best_state)
    return net.cpu().eval(), module.history, module.loss_curve
