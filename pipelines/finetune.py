"""Fine-tune SpectralGPT heads: a segmenter on labelled scenes and a scene classifier on labelled chips,
optionally initialised from a pretrained (or fine-tuned) SpectralGPT checkpoint (``init``).

The checkpoint written holds the full preprocessing chain (band selection or spectral resampling, scaling,
normalisation), so ``hsikit classify scene.tif --model seg.safetensors`` replays it on any scene with the same
bands. With ``init``, the encoder shapes come from that checkpoint and its normalisation statistics are reused
(the encoder was trained on values scaled that way); without it the statistics come from the training data.

Labels: segmenter label rasters/vectors aligned with each scene through :func:`hsikit.io.labels.read_labels`
(0 = unlabelled, ignored in the loss). Scene-classifier chips come from folders ``root/<class>/*.tif``
(EuroSAT layout; class names = folder names, sorted) and/or CSV files ``path,label`` (header optional; paths
relative to the CSV).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.inputs import find_rasters
from hsikit.io.scene import Scene
from hsikit.pipelines.pretrain import (MODEL_CARD, NORMALIZATIONS, band_chain, normalization_step, sample_statistics,
                                       step_budget, with_normalization, write_run_report)
from hsikit.preprocess.chain import Chain
from hsikit.report import write_loss_curve_png
from hsikit.training.run import Run, RunOptions, RunResult, jsonable, prepare_run

#: encoder fields a head takes over from its ``init`` checkpoint
ENCODER_FIELDS = ("variant", "bands", "group_size", "patch_size", "img_size", "embed_dim", "depth", "num_heads",
                  "mlp_ratio", "input_scaling")


@dataclass
class FinetuneResult(RunResult):
    """A fine-tuned SpectralGPT head: see :class:`RunResult`."""


@dataclass
class Init:
    """What a head takes from a pretrained checkpoint."""

    name: str
    arch: str
    config: dict[str, Any]
    state: dict[str, Any]
    normalize: dict[str, Any] | None  # params of its fitted normalize step, if any


def read_init(path: str | Path) -> Init:
    """A SpectralGPT checkpoint (MAE or head) as an :class:`Init`; never unpickles."""
    from safetensors.torch import load_file

    from hsikit.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(path)
    if not meta.arch.startswith("spectralgpt"):
        raise InputError(f"{Path(path).name} is a {meta.arch} checkpoint, not a SpectralGPT one")
    steps = (meta.preprocessing or {}).get("steps", [])
    norm = next((s["params"] for s in steps if s["op"] == "normalize"), None)
    return Init(Path(path).name, meta.arch, dict(meta.config), load_file(str(path)), norm)


def head_config(init: Init | None, variant: str | None, model_config: dict[str, Any] | None) -> dict[str, Any]:
    """Head options: the encoder fields of ``init`` (if any), then ``variant``, then explicit ``model_config``.
    Changing an encoder shape against ``init`` is an error; ``img_size`` may change (tables are resized)."""
    cfg: dict[str, Any] = {}
    if init is not None:
        cfg.update({k: init.config[k] for k in ENCODER_FIELDS if k in init.config})
        if variant and variant != cfg.get("variant"):
            raise OptionError(f"--variant {variant} contradicts the {cfg.get('variant')} encoder of {init.name}")
        clash = [k for k in (model_config or {}) if k in ENCODER_FIELDS and k not in ("img_size", "input_scaling")
                 and model_config[k] != cfg.get(k)]
        if clash:
            raise OptionError(f"{', '.join(clash)} must match the encoder of {init.name}")
    elif variant:
        cfg["variant"] = variant
    cfg.update(model_config or {})
    return cfg


def load_init_weights(net, init: Init) -> dict[str, Any]:
    """Copy the encoder of ``init`` into ``net`` (position table resized if the image size changed)."""
    from hsikit.models.spectralgpt import load_encoder_state

    p = int(init.config["patch_size"])
    g = int(init.config["img_size"]) // p
    try:
        rep = load_encoder_state(net, init.state, src_grid=(g, g))
    except ValueError as e:
        raise InputError(f"{init.name}: {e}") from None
    return {"checkpoint": init.name, "arch": init.arch, "tensors_loaded": len(rep["loaded"]),
            "resized": rep["resized"], "ignored": rep["ignored"]}


def _normalization(mode: str | None, init: Init | None, scenes, chains, size: int, seed: int):
    """(mode, fitted normalize step or None, statistics) — from ``init`` unless a mode is asked for."""
    if mode is None and init is not None:
        if init.normalize is not None:
            from hsikit.preprocess.chain import Step

            return "from-init", Step("normalize", dict(init.normalize)), None
        mode = "per-image" if init.config.get("input_scaling") == "minmax" else "none"
    mode = mode or "dataset"
    if mode not in NORMALIZATIONS:
        raise OptionError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, not {mode!r}")
    stats = sample_statistics(scenes, chains, size, seed=seed) if mode in ("dataset", "zscore") else None
    return mode, normalization_step(mode, stats), stats


# -- what both heads share -------------------------------------------------------------------------------------------
@dataclass
class Head:
    """A head's run before its data are read: the model ``arch``, the ``run`` (outputs checked, not started), the
    recipe with its budget, the ``init`` checkpoint and the head options (``cfg``)."""

    arch: str
    run: Run
    recipe: Any  # FinetuneRecipe
    init: Init | None
    cfg: dict[str, Any]

    def model_config(self, mode: str, num_classes: int) -> Any:
        """The model config for ``num_classes`` classes (the official per-image min-max scaling for "per-image")."""
        from hsikit.models.registry import make_config

        if mode == "per-image":
            self.cfg["input_scaling"] = "minmax"
        return make_config(self.arch, **{"drop_path": self.recipe.drop_path, **self.cfg, "num_classes": num_classes})


@dataclass
class HeadData:
    """A head's training data and what its checkpoint and report record about them."""

    cfg: Any  # the model config
    data: Any  # SegmentationData or ChipData
    chain: Chain  # the full preprocessing, replayed at inference
    bands: dict[str, Any]  # the input bands (before preprocessing)
    names: list[str]
    colors: list[str]
    mode: str  # the normalisation: a mode of NORMALIZATIONS or "from-init"
    stats: dict[str, Any] | None


@dataclass
class TrainedHead:
    fit: Any  # FinetuneFit
    init_report: dict[str, Any] | None
    metrics: dict[str, Any]


def start_head(arch: str, recipe: Any, out: str | Path, options: RunOptions | None, *, steps: int | None,
               epochs: int | None, steps_per_epoch: int | None, init: str | Path | None, variant: str | None,
               model_config: dict[str, Any] | None) -> Head:
    """The budget from ``steps`` or ``epochs``, the output checks (on the lead rank), ``init`` and the options."""
    options = options or RunOptions()
    recipe = step_budget(recipe.replace(seed=options.seed), steps, epochs, steps_per_epoch)
    run = prepare_run(out, options)
    ini = read_init(init) if init else None
    return Head(arch, run, recipe, ini, head_config(ini, variant, model_config))


def train_head(head: Head, d: HeadData) -> TrainedHead:
    """Start the run, build the head (its encoder from ``init``, if any) and fit it; the loss metrics."""
    from hsikit.models.registry import create_model
    from hsikit.training.finetune import fit_head

    head.run.start(head.recipe.seed)
    net = create_model(head.arch, **jsonable(d.cfg))
    init_report = load_init_weights(net, head.init) if head.init is not None else None
    fit = fit_head(net.to(head.run.device), d.data, head.recipe, run=head.run)
    curve = fit.loss_curve
    metrics = {"first_loss": curve[0] if curve else None, "last_loss": curve[-1] if curve else None,
               "steps": len(curve), "steps_this_run": fit.steps_run, "fit_seconds": fit.seconds}
    return TrainedHead(fit, init_report, metrics)


def save_head(head: Head, d: HeadData, trained: TrainedHead, task: str, provenance: dict[str, Any],
              report: dict[str, Any], *, val_key: str, val_label: str) -> None:
    """Write the checkpoint (``provenance``: its facts after the step count), loss_curve.png (validation curve
    ``val_key``) and report.json (``report``: its facts after the normalisation statistics)."""
    from hsikit.checkpoint import CheckpointMeta

    run, fit = head.run, trained.fit
    meta = CheckpointMeta(
        arch=head.arch, config=jsonable(fit.net.cfg), task=task, bands=d.bands, preprocessing=d.chain.to_dict(),
        class_names=d.names, class_colors=d.colors,
        provenance=run.provenance(steps=len(fit.loss_curve), **provenance, model_card=MODEL_CARD),
    )
    run.save(fit.net, meta)
    write_loss_curve_png(fit.loss_curve, fit.history, run.dir / "loss_curve.png", title=f"{head.arch} fine-tuning",
                         val_key=val_key, val_label=val_label)
    write_run_report(run, head.arch, head.recipe, fit, trained.metrics,
                     {"init": trained.init_report, "normalization": d.mode, "statistics": d.stats, **report})


def head_result(head: Head, trained: TrainedHead) -> FinetuneResult:
    """The result of a head's run (no metrics on the ranks that do not write)."""
    run = head.run
    return FinetuneResult(run.out, trained.metrics if run.lead else {}, trained.fit.history, run.dir, run.seconds)


# -- segmenter -------------------------------------------------------------------------------------------------------
def read_pairs(sources: Sequence[str | Path], labels: Sequence[str | Path] | None) -> list[tuple[str, str]]:
    """(scene, labels) pairs: ``sources`` with one ``labels`` each, or CSV files with columns image and
    mask/label/labels (paths relative to the CSV)."""
    pairs: list[tuple[str, str]] = []
    plain = []
    for s in sources:
        p = Path(s)
        if p.suffix.lower() == ".csv":
            pairs.extend(_csv_pairs(p))
        else:
            plain.append(str(s))
    labels = [str(x) for x in (labels or [])]
    if plain and len(labels) != len(plain):
        raise OptionError(f"give one --labels per scene: {len(plain)} scene(s), {len(labels)} label file(s)")
    if labels and not plain:
        raise OptionError("--labels given, but every scene came from a CSV list (its labels are in the CSV)")
    pairs.extend(zip(plain, labels))
    if not pairs:
        raise InputError("no labelled training scene given")
    return pairs


def _csv_pairs(p: Path) -> list[tuple[str, str]]:
    if not p.exists():
        raise InputError(f"scene list not found: {p}")
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    keys = {k.strip().lower(): k for k in rows[0]}
    img = next((keys[k] for k in ("image", "scene", "path") if k in keys), None)
    lab = next((keys[k] for k in ("mask", "label", "labels") if k in keys), None)
    if img is None or lab is None:
        raise InputError(f"{p.name}: a scene list needs columns image and mask (or label), found {list(rows[0])}")

    def resolve(v: str) -> str:
        q = Path(v.strip())
        return str(q if q.is_absolute() else (p.parent / q).resolve())

    return [(resolve(r[img]), resolve(r[lab])) for r in rows]


def open_labelled(pairs: Sequence[tuple[str, str]], bands: Sequence[str], spectral: str, attribute: str | None,
                  allow_resample: bool = False) -> list[tuple[Scene, Chain, Any]]:
    """(scene, band chain, labels) of every (scene, labels) pair, the labels on the scene grid (see
    :func:`hsikit.io.labels.read_labels`); closes what it opened if one fails."""
    from hsikit.io.labels import read_labels
    from hsikit.io.open import open_scene

    out = []
    try:
        for scene_path, label_path in pairs:
            sc = open_scene(scene_path)
            try:
                lm = read_labels(label_path, sc, attribute=attribute, allow_resample=allow_resample)
                out.append((sc, band_chain(sc, bands, spectral), lm))
            except BaseException:
                sc.close()
                raise
    except BaseException:
        for sc, _, _ in out:
            sc.close()
        raise
    return out


def train_segmenter(
    scenes: Sequence[str | Path],
    labels: Sequence[str | Path] | None = None,
    *,
    out: str | Path,
    init: str | Path | None = None,
    variant: str | None = None,
    model_config: dict[str, Any] | None = None,
    val: Sequence[str | Path] | None = None,
    val_labels: Sequence[str | Path] | None = None,
    attribute: str | None = None,
    allow_resample: bool = False,
    class_names: Sequence[str] | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    select_best: bool | None = None,
    layer_decay: float | None = None,
    freeze_encoder: bool | None = None,
    normalization: str | None = None,
    spectral: str = "auto",
    run: RunOptions | None = None,
) -> FinetuneResult:
    """Fine-tune ``spectralgpt-segmenter`` on labelled ``scenes`` (see :func:`read_pairs`); validation OA/mIoU
    after every epoch on ``val`` scenes, classified whole through the tiled engine like ``hsikit classify``.
    ``epochs`` (of ``steps_per_epoch`` steps) is an alternative to ``steps``; ``layer_decay`` < 1 lowers the lr
    of the earlier encoder blocks, ``freeze_encoder`` trains the head alone. ``run``: the compute, output and seed
    options; more than one process trains with DDP (each step averages ``world x batch_size`` windows), and only
    the global rank 0 checks and writes outputs, the other ranks return a result without metrics. Label rasters
    must lie on their scene's grid unless ``allow_resample`` (nearest neighbour, with a warning; see
    :func:`hsikit.io.labels.read_labels`)."""
    from hsikit.models.registry import make_config
    from hsikit.training.finetune import segmenter_recipe

    recipe = segmenter_recipe().replace(batch_size=batch_size, lr=lr, select_best=select_best,
                                        layer_decay=layer_decay, freeze_encoder=freeze_encoder)
    head = start_head("spectralgpt-segmenter", recipe, out, run, steps=steps, epochs=epochs,
                      steps_per_epoch=steps_per_epoch, init=init, variant=variant, model_config=model_config)
    train_pairs = read_pairs(scenes, labels)
    val_pairs = read_pairs(val, val_labels) if val else []
    probe = make_config(head.arch, **{**head.cfg, "num_classes": 2})
    opened = open_labelled(train_pairs, probe.bands, spectral, attribute, allow_resample)
    vopened: list[tuple[Scene, Chain, Any]] = []
    try:
        if val_pairs:
            vopened = open_labelled(val_pairs, probe.bands, spectral, attribute, allow_resample)
        d = _segmentation_data(head, opened, vopened, probe.img_size, class_names, normalization)
        trained = train_head(head, d)
        if head.run.lead:
            m = trained.metrics
            if vopened:
                m.update(_segmentation_validation(head, d, trained.fit.net))
            inputs = {"scenes": [s.name for s, _, _ in opened], "val_scenes": [s.name for s, _, _ in vopened]}
            save_head(head, d, trained, "classification",
                      {**inputs, "init": trained.init_report, "normalization": d.mode, "spectral": spectral,
                       "val_oa": m.get("val_oa"), "val_miou": m.get("val_miou")},
                      {"spectral": spectral, "class_names": d.names, **inputs},
                      val_key="val_miou", val_label="validation mIoU")
    finally:
        for s, _, _ in opened + vopened:
            s.close()
    return head_result(head, trained)


def _segmentation_data(head: Head, opened, vopened, size: int, class_names: Sequence[str] | None,
                       normalization: str | None) -> HeadData:
    """Classes, normalisation, model config and the windows of the labelled scenes."""
    from hsikit.io.legend import default_colors
    from hsikit.models.registry import get_entry
    from hsikit.training.finetune import LabelledScene, SegmentationData

    k = max(int(lm.values.max()) for _, _, lm in opened)
    if k < 2:
        raise InputError("training needs labels of at least two classes")
    names = _class_names(class_names, [lm for _, _, lm in opened], k)
    colors = next((list(lm.class_colors)[:k] for _, _, lm in opened
                   if lm.class_colors and len(lm.class_colors) >= k), None) or default_colors(k)
    mode, norm, stats = _normalization(normalization, head.init, [s for s, _, _ in opened],
                                       [c for _, c, _ in opened], size, head.recipe.seed)
    cfg = head.model_config(mode, k)
    context = int(get_entry(head.arch).receptive_field(cfg))
    chains = [with_normalization(c, norm) for _, c, _ in opened]
    vchains = [with_normalization(c, norm) for _, c, _ in vopened]
    train_set = [LabelledScene(s, c.apply, lm.values) for (s, _, lm), c in zip(opened, chains)]
    val_set = [LabelledScene(s, c.apply, lm.values) for (s, _, lm), c in zip(vopened, vchains)]
    data = SegmentationData(train_set, val_set, cfg.img_size, k, head.recipe, context=context)
    return HeadData(cfg, data, chains[0], opened[0][0].bands.to_dict(), names, colors, mode, stats)


def _segmentation_validation(head: Head, d: HeadData, net: Any) -> dict[str, Any]:
    """OA, mIoU, AA, kappa and per-class F1 on the validation scenes; writes the confusion matrix."""
    import torch

    from hsikit.metrics import scores
    from hsikit.report import write_confusion_csv, write_confusion_png
    from hsikit.training.finetune import segmentation_scores

    cm = d.data.confusion(net, torch.device("cpu"))
    metrics = segmentation_scores(cm)
    metrics.update({k: v for k, v in scores(cm).items() if k in ("aa", "kappa", "per_class_f1")})
    write_confusion_csv(cm, d.names, head.run.dir / "confusion_matrix.csv")
    write_confusion_png(cm, d.names, head.run.dir / "confusion_matrix.png",
                        title=f"{head.arch} on validation: OA {metrics['val_oa']:.3f}, mIoU {metrics['val_miou']:.3f}")
    return metrics


def _class_names(given: Sequence[str] | None, maps, k: int) -> list[str]:
    if given:
        names = [n.strip() for n in given]
        if len(names) != k:
            raise OptionError(f"--class-names lists {len(names)} names; the labels have {k} classes")
        return names
    for lm in maps:
        if lm.class_names and len(lm.class_names) >= k:
            return list(lm.class_names)[:k]
    return [f"class_{i}" for i in range(1, k + 1)]


# -- scene classifier ------------------------------------------------------------------------------------------------
def read_chips(sources: Sequence[str | Path], classes: Sequence[str] | None = None
               ) -> tuple[list[tuple[str, str]], list[str]]:
    """(path, class name) of every chip and the sorted class names (``classes`` fixes the list, e.g. for
    validation). Folders: ``root/<class>/<chip>``; CSV: ``path,label`` rows (header optional)."""
    items: list[tuple[str, str]] = []
    for s in sources:
        p = Path(s)
        if not p.exists():
            raise InputError(f"chip folder or list not found: {p}")
        if p.is_dir():
            for d in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")):
                items.extend((str(f), d.name) for f in find_rasters(d))
        elif p.suffix.lower() == ".csv":
            with p.open(newline="") as f:
                rows = [r for r in csv.reader(f) if r and r[0].strip()]
            if rows and rows[0][0].strip().lower() in ("path", "image", "file", "chip"):
                rows = rows[1:]
            for r in rows:
                if len(r) < 2:
                    raise InputError(f"{p.name}: rows must be path,label; got {r}")
                q = Path(r[0].strip())
                items.append((str(q if q.is_absolute() else (p.parent / q).resolve()), r[1].strip()))
        else:
            raise InputError(f"{p.name}: give a folder of class sub-folders or a CSV of path,label")
    if not items:
        raise InputError(f"no chip found in {', '.join(str(s) for s in sources)}")
    found = sorted({c for _, c in items}, key=lambda c: (0, int(c)) if c.isdigit() else (1, c))
    if classes is None:
        return items, found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise InputError(f"validation classes {unknown} are not training classes")
    return items, list(classes)


def train_scene_classifier(
    chips: Sequence[str | Path],
    *,
    out: str | Path,
    init: str | Path | None = None,
    variant: str | None = None,
    model_config: dict[str, Any] | None = None,
    val: Sequence[str | Path] | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    select_best: bool | None = None,
    mixup: float | None = None,
    cutmix: float | None = None,
    smoothing: float | None = None,
    layer_decay: float | None = None,
    normalization: str | None = None,
    spectral: str = "auto",
    run: RunOptions | None = None,
) -> FinetuneResult:
    """Fine-tune ``spectralgpt-scene-classifier`` on labelled chips (see :func:`read_chips`); validation
    accuracy after every epoch on ``val`` chips. All chips must share the first chip's band layout. ``epochs``
    (of ``steps_per_epoch`` steps) is an alternative to ``steps``. ``run``: the compute, output and seed options;
    more than one process trains with DDP, and only the global rank 0 checks and writes outputs."""
    from hsikit.training.finetune import scene_classifier_recipe

    recipe = scene_classifier_recipe().replace(batch_size=batch_size, lr=lr, select_best=select_best, mixup=mixup,
                                               cutmix=cutmix, smoothing=smoothing, layer_decay=layer_decay)
    head = start_head("spectralgpt-scene-classifier", recipe, out, run, steps=steps, epochs=epochs,
                      steps_per_epoch=steps_per_epoch, init=init, variant=variant, model_config=model_config)
    items, names = read_chips(chips)
    vitems, _ = read_chips(val, names) if val else ([], names)
    if len(names) < 2:
        raise InputError("scene classification needs chips of at least two classes")
    d = _chip_data(head, items, vitems, names, normalization, spectral)
    trained = train_head(head, d)
    if head.run.lead:
        m = trained.metrics
        if vitems:
            m.update(_chip_validation(head, d, trained.fit.net))
        save_head(head, d, trained, "scene-classification",
                  {"chips": len(items), "val_chips": len(vitems), "init": trained.init_report,
                   "normalization": d.mode, "val_accuracy": m.get("val_accuracy")},
                  {"class_names": names, "chips": len(items), "val_chips": len(vitems)},
                  val_key="val_accuracy", val_label="validation accuracy")
    return head_result(head, trained)


def _chip_data(head: Head, items: list[tuple[str, str]], vitems: list[tuple[str, str]], names: list[str],
               normalization: str | None, spectral: str) -> HeadData:
    """The band chain of the first chip, the normalisation (from up to 64 sampled chips), the model config and
    the chips, read on demand."""
    from hsikit.io.legend import default_colors
    from hsikit.io.open import open_scene
    from hsikit.models.registry import make_config
    from hsikit.training.finetune import Chip, ChipData

    probe = make_config(head.arch, **{**head.cfg, "num_classes": len(names)})
    first = open_scene(items[0][0])
    try:
        chip_bands = first.bands.to_dict()
        chain = band_chain(first, probe.bands, spectral)
        rng = np.random.default_rng(head.recipe.seed)
        sample = [items[i][0] for i in rng.choice(len(items), min(len(items), 64), replace=False)]
        sample_scenes = [open_scene(p) for p in sample]
        try:
            for s in sample_scenes:
                chain.check_input(s.bands)
            mode, norm, stats = _normalization(normalization, head.init, sample_scenes,
                                               [chain] * len(sample_scenes), probe.img_size, head.recipe.seed)
        finally:
            for s in sample_scenes:
                s.close()
    finally:
        first.close()
    cfg = head.model_config(mode, len(names))
    full = with_normalization(chain, norm)

    def opener(path: str) -> Scene:
        sc = open_scene(path)
        full.check_input(sc.bands)
        return sc

    index = {n: i for i, n in enumerate(names)}
    data = ChipData([Chip(p, index[c]) for p, c in items], [Chip(p, index[c]) for p, c in vitems], full.apply,
                    probe.img_size, len(names), head.recipe, opener)
    return HeadData(cfg, data, full, chip_bands, names, default_colors(len(names)), mode, stats)


def _chip_validation(head: Head, d: HeadData, net: Any) -> dict[str, Any]:
    """Accuracy, kappa and AA on the validation chips; writes the confusion matrix."""
    import torch

    from hsikit.metrics import confusion_matrix, scores
    from hsikit.report import write_confusion_csv, write_confusion_png

    pred = d.data.predict(net, d.data.val, torch.device("cpu"))
    cm = confusion_matrix(np.array([c.label for c in d.data.val]), pred, len(d.names))
    sc = scores(cm)
    write_confusion_csv(cm, d.names, head.run.dir / "confusion_matrix.csv")
    write_confusion_png(cm, d.names, head.run.dir / "confusion_matrix.png",
                        title=f"{head.arch} on validation chips: accuracy {sc['oa']:.3f}")
    return {"val_accuracy": sc["oa"], "val_kappa": sc["kappa"], "val_aa": sc["aa"]}


def classify_chips(model: str | Path, chips: Sequence[str | Path], device: str = "auto") -> list[tuple[str, str]]:
    """(chip path, predicted class name) for every chip file of ``chips`` (files or folders searched
    recursively), with a scene-classifier checkpoint and its stored preprocessing."""
    from hsikit.checkpoint import load_checkpoint
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.io.open import open_scene
    from hsikit.preprocess.chain import Chain
    from hsikit.training.finetune import Chip, ChipData, scene_classifier_recipe

    net, meta = load_checkpoint(model)
    if meta.task != "scene-classification":
        raise InputError(f"{Path(model).name} is a {meta.task} model, not a scene classifier")
    chain = Chain.from_dict(meta.preprocessing)
    paths: list[str] = []
    for c in chips:
        p = Path(c)
        if p.is_dir():
            paths.extend(str(f) for f in find_rasters(p))
        else:
            paths.append(str(p))

    def opener(path: str) -> Scene:
        sc = open_scene(path)
        chain.check_input(sc.bands)
        return sc

    dev = resolve_device(device)
    data = ChipData([], [], chain.apply, int(net.cfg.img_size), len(meta.class_names), scene_classifier_recipe(),
                    opener)
    pred = data.predict(net.to(dev), [Chip(p, 0) for p in paths], dev)
    return [(p, meta.class_names[int(i)]) for p, i in zip(paths, pred)]
