"""Fine-tuning of the SpectralGPT heads with Lightning: semantic segmentation on labelled scenes and scene
classification on labelled chips. Data are streamed (windows/chips read on demand, never whole archives).

Recipes (those of the official SpectralGPT code, scaled for CPU: smaller batches and step budgets; learning rates
as published):

- segmenter (SegMunich recipe): AdamW lr 1e-4, weight decay 1e-5, linear warm-up over 6 % of the budget (15 of
  250 epochs) then poly decay (power 0.9) per step, cross-entropy ignoring unlabelled pixels, rot90 + flips; batch 8.
- scene classifier (EuroSAT recipe): AdamW lr 2e-4 (the paper's actual lr at batch 256, kept at the CPU batch of
  16), weight decay 0.05 (none on biases, norms, position tables), layer-wise lr decay 0.75, warm-up 13 % then cosine,
  drop-path 0.2, random resized crop (20-100 %) + flip, mixup 0.8 / cutmix 1.0 (one of them per batch) with
  label smoothing 0.1 (soft-target cross-entropy).

Batches are keyed by (seed, rank, global step) like pretraining, so resumed runs repeat an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from hsikit.io.scene import Scene
from hsikit.training.pretrain import StepKeyedModule, Transform, resize, step_loader, warmup_cosine
from hsikit.training.run import Run


@dataclass
class FinetuneRecipe:
    """Optimiser, schedule, budget and augmentation of a head. ``schedule``: "poly" (warm-up then
    (1 - t)^poly_power) or "cosine" (warm-up then half-cosine). ``layer_decay`` < 1 scales the lr of encoder
    block i by ``layer_decay ** (depth + 1 - (i + 1))`` (embeddings lowest, head 1). ``freeze_encoder`` trains
    the head alone on the fixed encoder (the frozen-feature probe of self-supervised evaluation)."""

    steps: int = 1000
    steps_per_epoch: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 1.0
    warmup: float = 0.06
    schedule: str = "poly"
    poly_power: float = 0.9
    drop_path: float = 0.0
    augment: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.0
    select_best: bool = True
    grad_clip: float | None = None
    freeze_encoder: bool = False
    seed: int = 0

    def replace(self, **changes: Any) -> "FinetuneRecipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


SEGMENTER_RECIPE = FinetuneRecipe()
SCENE_CLASSIFIER_RECIPE = FinetuneRecipe(batch_size=16, lr=2e-4, weight_decay=0.05, layer_decay=0.75, warmup=0.13,
                                         schedule="cosine", drop_path=0.2, mixup=0.8, cutmix=1.0, smoothing=0.1)


def segmenter_recipe() -> FinetuneRecipe:
    return dataclasses.replace(SEGMENTER_RECIPE)


def scene_classifier_recipe() -> FinetuneRecipe:
    return dataclasses.replace(SCENE_CLASSIFIER_RECIPE)


# -- augmentation ----------------------------------------------------------------------------------------------------
def dihedral(arrays: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """Apply the same of the 8 rot90/flip modes (``k`` in 0..7) to the last two axes of every array."""
    out = []
    for a in arrays:
        y = np.rot90(a, k % 4, axes=(-2, -1))
        out.append(np.ascontiguousarray(y[..., ::-1] if k >= 4 else y))
    return out


# -- segmentation data -----------------------------------------------------------------------------------------------
@dataclass
class LabelledScene:
    """A scene, its preprocessing transform and its labels on the scene grid (0 = unlabelled, classes 1..K)."""

    scene: Scene
    transform: Transform
    labels: np.ndarray


class SegmentationData:
    """Random ``size`` windows around labelled pixels, read on demand; targets are classes - 1 (-1 ignored)."""

    score_key = "val_miou"

    def __init__(self, train: Sequence[LabelledScene], val: Sequence[LabelledScene], size: int, num_classes: int,
                 recipe: FinetuneRecipe, *, context: int = 0) -> None:
        self.train, self.val, self.size, self.k = list(train), list(val), int(size), int(num_classes)
        self.recipe, self.context = recipe, int(context)
        self.coords = [np.flatnonzero(t.labels.ravel() > 0) for t in self.train]
        counts = np.array([c.size for c in self.coords], dtype=np.float64)
        if counts.sum() == 0:
            raise ValueError("no labelled pixel in the training scenes")
        self.p = counts / counts.sum()

    def draw_one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = int(rng.choice(len(self.train), p=self.p))
        t = self.train[k]
        sc, s = t.scene, self.size
        flat = int(self.coords[k][rng.integers(self.coords[k].size)])
        r, c = divmod(flat, sc.width)
        h, w = min(s, sc.height), min(s, sc.width)
        r0 = int(rng.integers(max(0, r - h + 1), min(r, sc.height - h) + 1))
        c0 = int(rng.integers(max(0, c - w + 1), min(c, sc.width - w) + 1))
        win = Window(c0, r0, w, h)
        raw = sc.read(win)
        valid = sc.read_valid(win, raw)
        x = t.transform(raw, valid)
        x[:, ~valid] = 0.0
        y = t.labels[r0 : r0 + h, c0 : c0 + w].astype(np.int64) - 1
        y[~valid] = -1
        if (h, w) != (s, s):
            x = np.pad(x, ((0, 0), (0, s - h), (0, s - w)))
            y = np.pad(y, ((0, s - h), (0, s - w)), constant_values=-1)
        if self.recipe.augment:
            x, y = dihedral([x, y], int(rng.integers(8)))
        return x.astype(np.float32, copy=False), y

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.draw_one(rng) for _ in range(self.recipe.batch_size)))
        return np.stack(xs), np.stack(ys)

    def loss(self, net: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(net(x), y, ignore_index=-1)

    @torch.no_grad()
    def confusion(self, net: torch.nn.Module, device: torch.device) -> np.ndarray:
        """(K, K) confusion matrix over the labelled pixels of the validation scenes (tiled, as ``classify``)."""
        from hsikit.metrics import confusion_matrix

        cm = np.zeros((self.k, self.k), dtype=np.int64)
        for t in self.val:
            pred, valid = predict_scene(net, t.scene, t.transform, device, window=self.size, context=self.context,
                                        num_classes=self.k)
            m = (t.labels > 0) & valid & (t.labels <= self.k)
            cm += confusion_matrix(t.labels[m] - 1, pred[m], self.k)
        return cm

    def validate(self, net: torch.nn.Module, device: torch.device) -> dict[str, float]:
        if not self.val:
            return {}
        return segmentation_scores(self.confusion(net, device))


def segmentation_scores(cm: np.ndarray) -> dict[str, float]:
    """OA and mean IoU over the classes present in the reference or the prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=present)
    return {"val_oa": float(inter.sum() / cm.sum()) if cm.sum() else float("nan"),
            "val_miou": float(iou[present].mean()) if present.any() else float("nan"),
            "val_iou": iou.tolist()}


def predict_scene(net: torch.nn.Module, scene: Scene, transform: Transform, device: torch.device, *, window: int,
                  context: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(0-based class map, validity) of a whole scene through the tiled engine, as ``hsikit classify`` runs it."""
    from hsikit.engine.engine import TileSpec, run_tiled
    from hsikit.engine.torch_predict import TorchPredictor

    pred = np.zeros((scene.height, scene.width), dtype=np.int64)
    ok = np.zeros((scene.height, scene.width), dtype=bool)

    def sink(win, values, valid):
        r, c = int(win.row_off), int(win.col_off)
        pred[r : r + values.shape[1], c : c + values.shape[2]] = values.argmax(0)
        ok[r : r + values.shape[1], c : c + values.shape[2]] = valid

    was = net.training
    tile = max(4 * window, 4 * context, 64)
    patch = int(getattr(getattr(net, "cfg", None), "patch_size", 8))
    run_tiled(scene, TorchPredictor(net, str(device), size_multiple=patch), out_channels=num_classes, sink=sink,
              spec=TileSpec(tile=tile), context=context, size_multiple=patch, transform_input=transform,
              progress=False)
    net.train(was)
    return pred, ok


# -- scene-classification data ---------------------------------------------------------------------------------------
@dataclass
class Chip:
    path: str
    label: int  # 0-based


class ChipData:
    """Labelled chips read on demand through ``transform``: random resized crop + flip for training, a plain
    resize to ``size`` for evaluation; mixup/cutmix with soft, label-smoothed targets."""

    score_key = "val_accuracy"

    def __init__(self, train: Sequence[Chip], val: Sequence[Chip], transform: Transform, size: int, num_classes: int,
                 recipe: FinetuneRecipe, opener: Callable[[str], Scene]) -> None:
        self.train, self.val, self.transform = list(train), list(val), transform
        self.size, self.k, self.recipe, self.opener = int(size), int(num_classes), recipe, opener

    def read(self, chip: Chip) -> np.ndarray:
        with self.opener(chip.path) as sc:
            raw = sc.read()
            valid = sc.read_valid(None, raw)
        x = self.transform(raw, valid)
        x[:, ~valid] = 0.0
        return x

    def draw_one(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        chip = self.train[int(rng.integers(len(self.train)))]
        x = self.read(chip)
        if self.recipe.augment:
            _, h, w = x.shape
            lo, hi = self.recipe.crop_scale
            area = h * w * rng.uniform(lo, hi)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = int(np.clip(round(math.sqrt(area * aspect)), 1, w))
            ch = int(np.clip(round(math.sqrt(area / aspect)), 1, h))
            r0, c0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            x = x[:, r0 : r0 + ch, c0 : c0 + cw]
            if rng.random() < 0.5:
                x = x[:, :, ::-1]
        return resize(np.ascontiguousarray(x), self.size), chip.label

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.draw_one(rng) for _ in range(self.recipe.batch_size)))
        x = np.stack(xs).astype(np.float32)
        y = soft_targets(np.asarray(ys), self.k, self.recipe.smoothing)
        return mix(x, y, self.recipe.mixup, self.recipe.cutmix, rng)

    def loss(self, net: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.sum(-y * F.log_softmax(net(x), dim=-1), dim=-1).mean()

    @torch.no_grad()
    def predict(self, net: torch.nn.Module, chips: Sequence[Chip], device: torch.device, batch: int = 32) -> np.ndarray:
        was = net.training
        net.eval()
        out = []
        for s in range(0, len(chips), batch):
            x = np.stack([resize(self.read(c), self.size) for c in chips[s : s + batch]])
            out.append(net(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy())
        net.train(was)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def validate(self, net: torch.nn.Module, device: torch.device) -> dict[str, float]:
        if not self.val:
            return {}
        pred = self.predict(net, self.val, device)
        return {"val_accuracy": float((pred == np.array([c.label for c in self.val])).mean())}


def soft_targets(labels: np.ndarray, k: int, smoothing: float) -> np.ndarray:
    """One-hot rows with ``smoothing`` spread uniformly over the ``k`` classes."""
    y = np.full((labels.size, k), smoothing / k, dtype=np.float32)
    y[np.arange(labels.size), labels] += 1.0 - smoothing
    return y


def mix(x: np.ndarray, y: np.ndarray, mixup: float, cutmix: float, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
    """Mixup (Beta(``mixup``)) or cutmix (Beta(``cutmix``)) with the batch reversed, chosen with equal odds when
    both are on; targets mixed by the (box-area) weight. Off when both are 0."""
    if x.shape[0] < 2 or (mixup <= 0 and cutmix <= 0):
        return x, y
    use_cut = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cut else rng.beta(mixup, mixup))
    xf, yf = x[::-1], y[::-1]
    if use_cut:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        r0, r1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
        c0, c1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
        x = x.copy()
        x[..., r0:r1, c0:c1] = xf[..., r0:r1, c0:c1]
        lam = 1.0 - (r1 - r0) * (c1 - c0) / (h * w)
    else:
        x = lam * x + (1 - lam) * xf
    return x.astype(np.float32), (lam * y + (1 - lam) * yf).astype(np.float32)


# -- optimisation ----------------------------------------------------------------------------------------------------
def layer_id(name: str, depth: int) -> int:
    """0 for the patch embedding and position tables, i + 1 for encoder block i, depth + 1 for the rest."""
    if name.startswith(("encoder.patch_embed", "encoder.pos_embed")):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups(net: torch.nn.Module, lr: float, weight_decay: float, layer_decay: float,
                 depth: int) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay; no weight decay on biases, 1-D weights and position tables."""
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name
        lid = layer_id(name, depth)
        scale = float(layer_decay) ** (depth + 1 - lid)
        g = groups.setdefault((lid, plain), {"params": [], "lr": lr * scale, "weight_decay": 0.0 if plain else
                                             weight_decay, "lr_scale": scale})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def poly_with_warmup(total: int, warmup: float, power: float) -> Callable[[int], float]:
    warm = int(round(warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, 1.0 - (step - warm) / max(1, total - warm)) ** power

    return factor


# -- Lightning -------------------------------------------------------------------------------------------------------
class FinetuneModule(StepKeyedModule):
    """Train a head on ``data`` (SegmentationData or ChipData); validation metrics after every epoch."""

    def __init__(self, net: torch.nn.Module, data: Any, recipe: FinetuneRecipe, ckpt_path: Path | None = None
                 ) -> None:
        super().__init__(data.draw, recipe.seed, recipe.steps, ckpt_path)
        self.net, self.data, self.recipe = net, data, recipe
        self._epoch: list[float] = []
        if recipe.freeze_encoder:
            net.encoder.requires_grad_(False)  # left out of the optimiser (and of DDP's gradient sync)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tensors, _ = self.step_batch()
        loss = self.data.loss(self.net, tensors)
        v = float(loss.detach())
        self._epoch.append(v)
        self.loss_curve.append(v)
        self.steps_run += 1
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=tensors[0].shape[0])
        return loss

    def epoch_end(self) -> None:
        loss = float(np.mean(self._epoch)) if self._epoch else float("nan")
        self._epoch = []
        self.net.eval()
        metrics = self.data.validate(self.net, self.device)
        self.net.train()
        self.history.append({"epoch": len(self.history) + 1, "step": int(self.global_step), "train_loss": loss,
                             "lr": self.current_lr(), **metrics})
        score = metrics.get(self.data.score_key, float("nan"))
        score = score if math.isfinite(score) else -loss
        if self.recipe.select_best and score > self.best_score:
            self.best_score = score
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.net.state_dict().items()})

    def configure_optimizers(self) -> Any:
        r = self.recipe
        depth = int(getattr(self.net.cfg, "depth", 0))
        opt = torch.optim.AdamW(param_groups(self.net, r.lr, r.weight_decay, r.layer_decay, depth), lr=r.lr,
                                betas=tuple(r.betas), foreach=True)
        if r.schedule == "poly":
            fn = poly_with_warmup(self.total_steps, r.warmup, r.poly_power)
        elif r.schedule == "cosine":
            fn = warmup_cosine(self.total_steps, r.warmup)
        else:
            raise ValueError(f"unknown schedule {r.schedule!r}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class FinetuneFit(NamedTuple):
    net: torch.nn.Module
    history: list[dict[str, Any]]
    loss_curve: list[float]
    steps_run: int
    seconds: float


def fit_head(net: torch.nn.Module, data: Any, recipe: FinetuneRecipe, *, run: Run) -> FinetuneFit:
    """Fine-tune for ``recipe.steps`` steps (history row + validation every ``steps_per_epoch``) with the compute
    options of ``run`` (started); keeps the best validation weights when ``recipe.select_best`` and a validation
    set exists, else the last.

    More than one process trains with DDP: every rank draws its own batch per step (rank-keyed seed), so a step
    averages ``world x batch_size`` samples; steps, schedule and lr are the recipe's. Every rank validates the
    same weights on the same data, so the best-weights choice agrees across ranks."""
    steps = max(1, min(int(recipe.steps_per_epoch), int(recipe.steps)))
    module = FinetuneModule(net, data, recipe, run.dir / "checkpoints" / "last.ckpt")
    trainer = run.trainer(max_steps=int(recipe.steps), grad_clip=recipe.grad_clip, steps_per_epoch=steps,
                          use_distributed_sampler=False)  # batches are keyed by (rank, step): never shard them
    t0 = time.perf_counter()
    run.fit(trainer, module, step_loader(steps))
    seconds = time.perf_counter() - t0
    if recipe.select_best and data.val and module.best_state is not None:
        net.load_state_dict(module.best_state)
    return FinetuneFit(net.cpu().eval(), module.history, module.loss_curve, module.steps_run, seconds)
