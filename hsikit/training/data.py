"""Training data for classifiers, one class per kind of model input.

Each provides ``train_loader(seed)`` for Lightning, ``loss(net, batch)`` and ``predict(net, mask, device)`` (0-based
classes of the pixels of ``mask``, row-major). Training scenes are small enough to hold preprocessed in memory;
whole scenes of any size are classified later by the tiled engine.

Distributed training (``world`` > 1 processes): map-style loaders are sharded by Lightning's DistributedSampler;
the streams (random crops, GS² minibatches) shard themselves when iterated, so every rank sees different samples
and an epoch keeps its size in samples (1/world of the steps per rank).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from hsikit.sampling import gs2_minibatches
from hsikit.training.distributed import shard_info, sharded_steps


class ClassifierData:
    kind = "base"
    #: processes sharing each epoch (set by the fit loop before the loaders are made)
    world = 1

    def __init__(self, x: np.ndarray, labels: np.ndarray, train: np.ndarray, *, batch_size: int | None = None,
                 seed: int = 0, **_: Any) -> None:
        self.x = x  # (F, H, W) float32, preprocessed
        self.labels = labels  # (H, W) int, 0 = unlabelled, classes 1..K
        self.train = train
        self.batch_size = batch_size
        self.seed = seed

    def steps_per_epoch(self) -> int:
        """Optimiser steps of one epoch on each rank."""
        loader = self.train_loader()
        if self.world <= 1 or isinstance(loader.dataset, IterableDataset):
            return len(loader)  # streams report their per-rank length themselves
        n = -(-len(loader.dataset) // self.world)  # DistributedSampler pads every rank to the same share
        bs = loader.batch_size or 1
        return n // bs if loader.drop_last else -(-n // bs)

    def train_loader(self) -> Any:
        raise NotImplementedError

    def loss(self, net: torch.nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, net: torch.nn.Module, mask: np.ndarray, device: torch.device) -> np.ndarray:
        raise NotImplementedError


class PixelData(ClassifierData):
    """Per-pixel spectral models: minibatches of labelled spectra, shuffled each epoch."""

    kind = "pixel spectra"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        n = int(self.train.sum())
        # at least ~8 optimiser steps per epoch on small training sets
        self.batch_size = self.batch_size or int(np.clip(n // 8, 16, 256))

    def train_loader(self) -> DataLoader:
        feats = torch.from_numpy(np.ascontiguousarray(self.x[:, self.train].T))
        y = torch.from_numpy(self.labels[self.train].astype(np.int64) - 1)
        g = torch.Generator().manual_seed(self.seed)
        # BatchNorm needs two samples: a last batch of one (on any rank's share) is dropped
        drop = -(-feats.shape[0] // self.world) % self.batch_size == 1
        return DataLoader(TensorDataset(feats, y), batch_size=self.batch_size, shuffle=True, generator=g, drop_last=drop)

    def loss(self, net, batch):
        x, y = batch
        return F.cross_entropy(net(x[:, :, None, None])[:, :, 0, 0], y)

    @torch.no_grad()
    def predict(self, net, mask, device):
        feats = self.x[:, mask].T
        out = [net(torch.from_numpy(np.ascontiguousarray(feats[s : s + 65536])).to(device)[:, :, None, None])[:, :, 0, 0]
               .argmax(1).cpu().numpy() for s in range(0, feats.shape[0], 65536)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


class PatchData(ClassifierData):
    """Patch models (MorpMamba): a ``patch``×``patch`` window around each labelled pixel, cut on the fly from the
    zero-padded cube; the pixel sits at index ``patch // 2`` of the window in both axes."""

    kind = "pca patches"

    def __init__(self, *a: Any, patch: int = 4, augment: str = "none", **kw: Any) -> None:
        super().__init__(*a, **kw)
        if augment not in ("none", "dihedral"):
            raise ValueError(f"unknown augmentation {augment!r}")
        self.patch = int(patch)
        self.augment = augment
        lo = self.patch // 2
        self.lo = lo
        # P//2 on both sides (one more than an even window needs after it) so mirrored windows fit too
        self.padded = torch.from_numpy(np.pad(self.x, ((0, 0), (lo, lo), (lo, lo))))
        self.batch_size = self.batch_size or 256
        self._aug = torch.Generator().manual_seed(self.seed + 1)

    def windows(self, rows: torch.Tensor, cols: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) pixel coordinates -> (N, F, P, P) windows (top-left at row - P//2 in unpadded coordinates).

        ``flips`` (N, 3) bool: mirror the neighbourhood vertically, horizontally, and swap the axes, each about
        the labelled pixel, which stays at (P//2, P//2): the 8 symmetries of the square for odd and even P."""
        off = torch.arange(self.patch)
        r = rows[:, None] + off[None]  # padded coordinates of the window rows
        c = cols[:, None] + off[None]
        if flips is not None:
            # a mirrored window reads offsets +P//2 ... down about the centre instead of -P//2 ... up
            r = torch.where(flips[:, :1], rows[:, None] + 2 * self.lo - off[None], r)
            c = torch.where(flips[:, 1:2], cols[:, None] + 2 * self.lo - off[None], c)
        w = self.padded[:, r[:, :, None], c[:, None, :]].permute(1, 0, 2, 3)
        if flips is not None:
            w = torch.where(flips[:, 2, None, None, None], w.transpose(2, 3), w)
        return w

    def _coords(self, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        r, c = np.nonzero(mask)
        return torch.from_numpy(r), torch.from_numpy(c)

    def train_loader(self) -> DataLoader:
        r, c = self._coords(self.train)
        y = torch.from_numpy(self.labels[self.train].astype(np.int64) - 1)
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(r, c, y), batch_size=self.batch_size, shuffle=True, generator=g)

    def loss(self, net, batch):
        r, c, y = batch
        flips = (torch.rand(r.numel(), 3, generator=self._aug) < 0.5) if self.augment == "dihedral" else None
        x = self.windows(r.cpu(), c.cpu(), flips).to(y.device)
        loss = F.cross_entropy(net.forward_patches(x), y)
        if hasattr(net, "l2_penalty"):
            loss = loss + net.l2_penalty()
        return loss

    @torch.no_grad()
    def predict(self, net, mask, device):
        r, c = self._coords(mask)
        k = net.chunk_for(torch.device(device))
        out = [net.forward_patches(self.windows(r[s : s + k], c[s : s + k]).to(device)).argmax(1).cpu().numpy()
               for s in range(0, r.numel(), k)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


class _CropStream(IterableDataset):
    """``steps`` random crop batches per epoch, shared by the ranks: each draws its own with a generator seeded
    by (seed, rank) (one process keeps the data's own generator)."""

    def __init__(self, data: "CropData", steps: int) -> None:
        self.data, self.steps = data, steps
        self._rank: int | None = None

    def __len__(self) -> int:
        return sharded_steps(self.steps, self.data.world)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = shard_info()
        if world > 1 and self._rank != rank:
            self.data.rng = np.random.default_rng([self.data.seed, rank])
            self._rank = rank
        for _ in range(len(self)):
            yield self.data.crop_batch()


class CropData(ClassifierData):
    """Image models (U-Net): random crops of the scene; the loss covers training pixels only."""

    kind = "image tiles"

    def __init__(self, *a: Any, crop: int = 64, size_multiple: int = 1, context: int = 0, **kw: Any) -> None:
        super().__init__(*a, **kw)
        h, w = self.labels.shape
        m = max(1, size_multiple)
        self.size_multiple, self.context = m, context
        self.crop = max(m, min(crop, h - h % m if h >= m else m, w - w % m if w >= m else m))
        self.batch_size = self.batch_size or 4
        self.target = np.where(self.train, self.labels - 1, -1).astype(np.int64)
        self.rng = np.random.default_rng(self.seed)

    def crop_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.labels.shape
        c = self.crop
        while True:
            ys = self.rng.integers(0, max(h - c, 0) + 1, self.batch_size)
            xs = self.rng.integers(0, max(w - c, 0) + 1, self.batch_size)
            yb = np.stack([_pad_to(self.target[None, y : y + c, x : x + c], c, fill=-1)[0] for y, x in zip(ys, xs)])
            if (yb >= 0).any():
                break
        xb = np.stack([_pad_to(self.x[:, y : y + c, x : x + c], c) for y, x in zip(ys, xs)])
        return torch.from_numpy(xb), torch.from_numpy(yb)

    def train_loader(self) -> DataLoader:
        h, w = self.labels.shape
        steps = max(4, int(np.ceil(h * w / self.crop**2)))
        return DataLoader(_CropStream(self, steps), batch_size=None)

    def loss(self, net, batch):
        x, y = batch
        return F.cross_entropy(net(x), y, ignore_index=-1)

    @torch.no_grad()
    def predict(self, net, mask, device):
        return tiled_argmax(net, self.x, device, size_multiple=self.size_multiple, context=self.context,
                            tile=max(4 * self.size_multiple, self.crop))[mask]


class _GS2Stream(IterableDataset):
    """One epoch of GS² minibatches. Every rank draws the same epoch (same generator) and takes its share
    (minibatches rank, rank + world, ..., wrapping around so all ranks take as many steps)."""

    def __init__(self, data: "GS2Data") -> None:
        self.data = data

    def __len__(self) -> int:
        n = self.data.minibatches_per_epoch()
        return sharded_steps(n, self.data.world) if n else 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        masks = self.data.epoch_masks()
        rank, world = shard_info()
        if world <= 1:
            for idx in masks:
                yield torch.from_numpy(idx)
            return
        for k in range(len(self)):
            yield torch.from_numpy(masks[(rank + k * world) % len(masks)])


class GS2Data(ClassifierData):
    """Patch-free models (FreeNet): every step is one forward pass of the whole scene; the loss is the mean
    cross-entropy over the pixels of one GS² minibatch (at most ``sub_minibatch`` per class)."""

    kind = "whole image"

    def __init__(self, *a: Any, sub_minibatch: int = 20, recycle: bool = False, size_multiple: int = 16,
                 context: int = 0, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sub_minibatch, self.recycle = int(sub_minibatch), recycle
        self.size_multiple, self.context = size_multiple, context
        self.image = torch.from_numpy(np.ascontiguousarray(self.x))[None]
        self.flat_labels = torch.from_numpy(self.labels.ravel().astype(np.int64) - 1)
        self.rng = np.random.default_rng(self.seed)

    def minibatches_per_epoch(self) -> int:
        counts = np.bincount(self.labels[self.train].ravel())
        return int(np.ceil(counts.max() / self.sub_minibatch)) if counts.size else 0

    def epoch_masks(self) -> list[np.ndarray]:
        return gs2_minibatches(self.train, self.labels, sub_minibatch=self.sub_minibatch, rng=self.rng,
                               recycle=self.recycle)

    def train_loader(self) -> DataLoader:
        return DataLoader(_GS2Stream(self), batch_size=None)

    def loss(self, net, batch):
        idx = batch.to(torch.long)
        logits = net(self.image.to(idx.device))  # (1, K, H, W)
        k = logits.shape[1]
        flat = logits[0].reshape(k, -1)
        # cross-entropy over the minibatch's pixels only: equal to the reference's per-pixel loss times the 0/1
        # minibatch mask divided by the mask's sum, without computing it for the other pixels
        return F.cross_entropy(flat[:, idx].T, self.flat_labels.to(idx.device)[idx])

    @torch.no_grad()
    def predict(self, net, mask, device):
        h, w = self.labels.shape
        if h * w <= 2048 * 2048:
            return net(self.image.to(device))[0].argmax(0).cpu().numpy()[mask]
        return tiled_argmax(net, self.x, device, size_multiple=self.size_multiple, context=self.context, tile=512)[mask]


DATA_KINDS = {cls.kind: cls for cls in (PixelData, PatchData, CropData, GS2Data)}


def tiled_argmax(net: torch.nn.Module, x: np.ndarray, device: torch.device, *, size_multiple: int, context: int,
                 tile: int) -> np.ndarray:
    """0-based class map of an in-memory preprocessed cube through the tiled engine."""
    from hsikit.engine.engine import TileSpec, run_tiled
    from hsikit.engine.torch_predict import TorchPredictor
    from hsikit.io.scene import ArrayScene

    pred = np.zeros(x.shape[1:], dtype=np.int64)

    def sink(win, values, valid):
        r, c = int(win.row_off), int(win.col_off)
        pred[r : r + values.shape[1], c : c + values.shape[2]] = values.argmax(0)

    cfg = getattr(net, "cfg", None)
    if cfg is not None:
        k = int(cfg.num_classes)
    else:  # e.g. segmentation-models-pytorch modules: ask the network
        with torch.no_grad():
            k = net(torch.zeros(1, x.shape[0], 2 * size_multiple, 2 * size_multiple, device=device)).shape[1]
    tile = max(size_multiple, tile - tile % size_multiple)
    spec = TileSpec(tile=tile, overlap=min(tile // 2, max(tile // 4, 2 * context)), margin=min(context, tile // 4))
    run_tiled(ArrayScene(x), TorchPredictor(net, str(device), size_multiple=size_multiple), out_channels=k, sink=sink,
              spec=spec, size_multiple=size_multiple, progress=False, context=min(context, tile // 4))
    return pred


def _pad_to(a: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    ph, pw = size - a.shape[1], size - a.shape[2]
    if ph <= 0 and pw <= 0:
        return a
    return np.pad(a, ((0, 0), (0, max(ph, 0)), (0, max(pw, 0))), constant_values=fill)
