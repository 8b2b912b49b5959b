"""Train a pixel classifier on a labelled scene: stratified split, early stopping, report, checkpoint."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    report_dir: Path | None = None
    seconds: float = 0.0


def train_classifier(
    scene: str | Path | Scene,
    labels: Any,
    *,
    out: str | Path,
    model: str = "spectral-cnn",
    model_config: dict[str, Any] | None = None,
    chain: dict[str, Any] | None = None,
    attribute: str | None = None,
    train: float = 0.5,
    val: float = 0.2,
    split: np.ndarray | None = None,
    epochs: int = 50,
    patience: int = 8,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    tile: int = 64,
    overwrite: bool = False,
    report_dir: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train ``model`` ("spectral-cnn" or "unet") on ``scene`` with ``labels`` (path or LabelMap).

    Pixels of each class are split into ``train``/``val`` (counts >= 1 or fractions < 1) and the rest for testing,
    or by a given ``split`` array (1 train, 2 val, 3 test). Bands go through a preprocessing chain
    (``chain``: options of ``Chain.from_options``; default drop bad bands + scale + normalise) fitted on the scene
    and stored in the checkpoint. Training stops early after ``patience`` epochs without a better validation OA
    and keeps the best weights. The report folder (default ``<out stem>_report``) gets report.json and the
    test confusion matrix as CSV and PNG.
    """
    import torch

    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.io.atomic import check_output
    from hsikit.io.labels import LabelMap, read_labels
    from hsikit.io.legend import default_colors
    from hsikit.io.open import open_scene
    from hsikit.metrics import confusion_matrix, scores
    from hsikit.models.registry import create_model, get_entry
    from hsikit.preprocess.chain import Chain
    from hsikit.report import write_confusion_csv, write_confusion_png, write_json
    from hsikit.sampling import split_from_raster, stratified_split

    t_start = time.perf_counter()
    out = Path(out)
    check_output(out, overwrite)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    if rdir.exists() and not overwrite and any(rdir.iterdir()):
        raise InputError(f"report folder exists and is not empty: {rdir} (use --overwrite)")
    entry = get_entry(model)
    if entry.task != "classification":
        raise OptionError(f"{model} is a {entry.task} model, not a classifier")

    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        lm = labels if isinstance(labels, LabelMap) else read_labels(labels, sc, attribute=attribute)
        lab = lm.values
        k = int(lab.max())
        if k < 2:
            raise InputError("training needs labels of at least two classes")
        names = list(lm.class_names or [])[:k] + [f"class_{i}" for i in range(len(lm.class_names or []) + 1, k + 1)]
        colors = list(lm.class_colors) if lm.class_colors and len(lm.class_colors) >= k else default_colors(k)
        sp = split_from_raster(split, lab) if split is not None else stratified_split(lab, train=train, val=val, seed=seed)
        if not sp.train.any():
            raise InputError("the split left no training pixel")
        opts = {"drop_bad_bands": True, "normalize": True}
        opts.update(chain or {})
        ch = Chain.from_options(**opts).fit(sc)

        torch.manual_seed(seed)
        np.random.seed(seed)
        dev = resolve_device(device)
        n_feat = ch.output_bands(sc.bands).count
        cfg = {"in_bands": n_feat, "num_classes": k, **(model_config or {})}
        net = create_model(model, **cfg).to(dev)
        trainer = _PixelTrainer if entry.inputs == "pixel spectra" else _TileTrainer
        tr = trainer(sc, ch, lab, sp, net, dev, lr=lr, batch_size=batch_size, seed=seed, tile=tile,
                     size_multiple=entry.size_multiple, context=int(entry.receptive_field(entry.config_cls(**cfg))))
        history = tr.fit(epochs=epochs, patience=patience, progress=progress)
        pred_test = tr.predict(sp.test)
        ref_test = lab[sp.test] - 1
        cm = confusion_matrix(ref_test, pred_test, k) if ref_test.size else np.zeros((k, k), int)
        metrics = scores(cm)
        seconds = time.perf_counter() - t_start
        meta = CheckpointMeta(
            arch=model, config=cfg, task="classification", bands=sc.bands.to_dict(), preprocessing=ch.to_dict(),
            class_names=names, class_colors=colors,
            provenance={"command": command, "scene": sc.name, "labels": getattr(labels, "name", None) or Path(str(labels)).name,
                        "created": _created(), "seed": seed,
                        "test_oa": metrics["oa"], "test_kappa": metrics["kappa"], "epochs_run": len(history)},
        )
        save_checkpoint(out, tr.best_model(), meta, overwrite=overwrite)
        rdir.mkdir(parents=True, exist_ok=True)
        write_confusion_csv(cm, names, rdir / "confusion_matrix.csv")
        write_confusion_png(cm, names, rdir / "confusion_matrix.png",
                            title=f"{model} on {sc.name}: OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}")
        from hsikit._version import __version__

        write_json({"model": model, "config": cfg, "scene": sc.name, "seed": seed, "hsikit_version": __version__,
                    "split": {"train": train, "val": val, "counts": sp.counts(lab)}, "preprocessing": [s.op for s in ch.steps],
                    "epochs": epochs, "patience": patience, "lr": lr, "device": str(dev), "history": history,
                    "metrics": metrics, "class_names": names, "seconds": seconds, "checkpoint": out.name},
                   rdir / "report.json")
    finally:
        if own:
            sc.close()
    return TrainResult(out, metrics, history, rdir, seconds)


class _Trainer:
    def __init__(self, scene, chain, labels, split, net, device, *, lr, batch_size, seed, tile, size_multiple, context):
        import torch

        self.scene, self.chain, self.labels, self.split = scene, chain, labels, split
        self.net, self.device = net, device
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.batch_size, self.tile, self.size_multiple, self.context = batch_size, tile, size_multiple, context
        self._best = None

    def fit(self, *, epochs: int, patience: int, progress: bool) -> list[dict[str, float]]:
        history, best, since = [], -1.0, 0
        has_val = bool(self.split.val.any())
        bar = _EpochBar(progress, epochs)
        with bar:
            for ep in range(epochs):
                loss = self.train_epoch()
                val_oa = float((self.predict(self.split.val) == self.labels[self.split.val] - 1).mean()) if has_val else float("nan")
                history.append({"epoch": ep + 1, "train_loss": loss, "val_oa": val_oa})
                bar.update(ep + 1, loss, val_oa)
                score = val_oa if has_val else -loss
                if score > best:
                    best, since = score, 0
                    self._best = copy.deepcopy(self.net.state_dict())
                else:
                    since += 1
                    if since >= patience:
                        break
        return history

    def best_model(self):
        if self._best is not None:
            self.net.load_state_dict(self._best)
        return self.net.cpu().eval()


class _PixelTrainer(_Trainer):
    """Per-pixel models: features of the labelled pixels are gathered once (memory ~ labelled pixels)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from hsikit.windows import iter_windows

        labelled = self.labels > 0
        feats = np.zeros((int(labelled.sum()), self.chain.output_bands(self.scene.bands).count), np.float32)
        self.index = np.full(self.labels.shape, -1, dtype=np.int64)
        self.index[labelled] = np.arange(feats.shape[0])
        for w in iter_windows(self.scene.width, self.scene.height, 512):
            r0, c0, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
            m = labelled[r0 : r0 + h, c0 : c0 + wd]
            if not m.any():
                continue
            raw = self.scene.read(w)
            x = self.chain.apply(raw, self.scene.read_valid(w, raw))
            feats[self.index[r0 : r0 + h, c0 : c0 + wd][m]] = x[:, m].T
        self.feats = feats
        self.train_idx = self.index[self.split.train]
        # at least ~8 optimiser steps per epoch on small training sets
        self.batch_size = self.batch_size or int(np.clip(self.train_idx.size // 8, 16, 256))
        self.train_y = self.labels[self.split.train] - 1

    def train_epoch(self) -> float:
        import torch
        import torch.nn.functional as F

        self.net.train()
        order = self.rng.permutation(self.train_idx.size)
        total, n = 0.0, 0
        for s in range(0, order.size, self.batch_size):
            sel = order[s : s + self.batch_size]
            if sel.size < 2:  # BatchNorm needs two samples
                continue
            x = torch.from_numpy(self.feats[self.train_idx[sel]]).to(self.device)[:, :, None, None]
            y = torch.from_numpy(self.train_y[sel]).long().to(self.device)
            loss = F.cross_entropy(self.net(x)[:, :, 0, 0], y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item() * sel.size
            n += sel.size
        return total / max(n, 1)

    def predict(self, mask: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        idx = self.index[mask]
        out = []
        with torch.inference_mode():
            for s in range(0, idx.size, 65536):
                x = torch.from_numpy(self.feats[idx[s : s + 65536]]).to(self.device)[:, :, None, None]
                out.append(self.net(x)[:, :, 0, 0].argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class _TileTrainer(_Trainer):
    """Image models: random crops with the loss on training pixels only; the preprocessed scene is held in memory
    (training scenes are small; inference on large scenes goes through the tiled engine)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        raw = self.scene.read()
        self.valid = self.scene.read_valid(None, raw)
        self.x = self.chain.apply(raw, self.valid)
        self.batch_size = self.batch_size or 4
        h, w = self.labels.shape
        m = self.size_multiple
        self.crop = max(m, min(self.tile, h - h % m if h >= m else m, w - w % m if w >= m else m))
        self.target = np.where(self.split.train, self.labels - 1, -1).astype(np.int64)

    def _crop(self):
        h, w = self.labels.shape
        c = self.crop
        ys = self.rng.integers(0, max(h - c, 0) + 1, self.batch_size)
        xs = self.rng.integers(0, max(w - c, 0) + 1, self.batch_size)
        xb = np.stack([_pad_to(self.x[:, y : y + c, x : x + c], c) for y, x in zip(ys, xs)])
        yb = np.stack([_pad_to(self.target[None, y : y + c, x : x + c], c, fill=-1)[0] for y, x in zip(ys, xs)])
        return xb, yb

    def train_epoch(self) -> float:
        import torch
        import torch.nn.functional as F

        self.net.train()
        h, w = self.labels.shape
        steps = max(4, int(np.ceil(h * w / self.crop**2)))
        total = 0.0
        done = 0
        for _ in range(steps):
            xb, yb = self._crop()
            if (yb < 0).all():
                continue
            x = torch.from_numpy(xb).to(self.device)
            y = torch.from_numpy(yb).to(self.device)
            loss = F.cross_entropy(self.net(x), y, ignore_index=-1)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
            done += 1
        return total / max(done, 1)

    def predict(self, mask: np.ndarray) -> np.ndarray:
        from hsikit.engine.engine import TileSpec, run_tiled
        from hsikit.engine.torch_predict import TorchPredictor
        from hsikit.io.scene import ArrayScene

        self.net.eval()
        k = self.net.segmentation_head[0].out_channels if hasattr(self.net, "segmentation_head") else None
        pred = np.zeros(self.labels.shape, dtype=np.int64)

        def sink(win, values, valid):
            r, c = int(win.row_off), int(win.col_off)
            pred[r : r + values.shape[1], c : c + values.shape[2]] = values.argmax(0)

        tile = max(self.size_multiple, 4 * self.size_multiple, self.crop)
        spec = TileSpec(tile=tile, overlap=min(tile // 2, max(tile // 4, 2 * self.context)),
                        margin=min(self.context, tile // 4))
        run_tiled(ArrayScene(self.x), TorchPredictor(self.net, str(self.device), size_multiple=self.size_multiple),
                  out_channels=k or int(self.labels.max()), sink=sink, spec=spec, size_multiple=self.size_multiple,
                  progress=False, context=min(self.context, tile // 4))
        return pred[mask]


def _created() -> str:
    """Creation time in ISO 8601 UTC; ``SOURCE_DATE_EPOCH`` fixes it for reproducible builds."""
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return t.replace(microsecond=0).isoformat()


def _pad_to(a: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    ph, pw = size - a.shape[1], size - a.shape[2]
    if ph <= 0 and pw <= 0:
        return a
    return np.pad(a, ((0, 0), (0, max(ph, 0)), (0, max(pw, 0))), constant_values=fill)


class _EpochBar:
    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("loss {task.fields[loss]:.4f}  val OA {task.fields[oa]:.4f}"), TimeElapsedColumn())
            self.p.__enter__()
            self.t = self.p.add_task("epochs", total=self.total, loss=float("nan"), oa=float("nan"))
        return self

    def update(self, epoch: int, loss: float, oa: float) -> None:
        if self.enabled:
            self.p.update(self.t, completed=epoch, loss=loss, oa=oa)

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)
