"""Training recipes: the optimiser, schedule and sampling each architecture's paper prescribes."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hsikit.sampling import Amount


@dataclass
class Recipe:
    """How to train one architecture. ``None``/-1 fields fall back to the trainer's generic defaults.

    ``schedule``: "none", "poly" (lr·(1 − step/total)^power, per step) or "inverse_time" (lr / (1 + decay·step),
    Keras' legacy ``decay``). ``epochs`` counts passes over the training pixels (for GS² one epoch is one round
    of stratified minibatches); ``iterations`` > 0 bounds optimiser steps instead. ``select_best`` keeps the
    weights of the best validation epoch; the papers of FreeNet and MorpMamba report the last iteration.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    poly_power: float = 0.9
    decay: float = 0.0
    epochs: int = 50
    iterations: int = -1
    batch_size: int | None = None
    grad_clip: float | None = None
    early_stopping: bool = True
    patience: int = 8
    select_best: bool = True
    sub_minibatch: int = 20
    #: "dihedral": patch models see each training window in one of the 8 symmetries of the square at random
    augment: str = "none"
    #: > 0: validate and keep an exponential moving average of the weights (this decay per optimiser step)
    ema: float = 0.0
    chain: dict[str, Any] = field(default_factory=lambda: {"drop_bad_bands": True, "normalize": True})
    #: model configuration defaults of this recipe; the user's ``--set`` wins (e.g. MorpMamba's ``kernel``)
    model: dict[str, Any] = field(default_factory=dict)
    #: the paper's split (``protocol="paper"``): per class a fraction (``train``/``val``, in [0, 1]) or a number of
    #: pixels (``train_pixels``/``val_pixels``), the rest for testing; FreeNet's paper uses 200 px/class, no validation
    train: float | None = 0.5
    train_pixels: int | None = None
    val: float | None = 0.2
    val_pixels: int | None = None
    max_train_fraction: float | None = None
    seed: int = 0

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def paper_split(self) -> tuple[Amount, Amount]:
        """The paper's training and validation amounts per class."""
        train = Amount(pixels=self.train_pixels) if self.train_pixels is not None else Amount(fraction=self.train)
        val = Amount(pixels=self.val_pixels) if self.val_pixels is not None else Amount(fraction=self.val or 0.0)
        return train, val


# Ahmad et al. 2025 (official notebook): 15 whitened PCA components, Adam 1e-3 with Keras decay 1e-6, 50 epochs
# of batch 256, 25 % train / 25 % validation (monitored only), last epoch kept.
_MORPMAMBA_NOTEBOOK = Recipe(optimizer="adam", lr=1e-3, schedule="inverse_time", decay=1e-6, epochs=50,
                             batch_size=256, early_stopping=False, select_best=False, train=0.25, val=0.25,
                             chain={"drop_bad_bands": True, "pca": 15, "pca_whiten": True})

#: named recipes per architecture; the first is the default. Architectures not listed train with
#: ``Recipe()`` (Adam 1e-3, early stopping on validation OA, best epoch kept).
RECIPES: dict[str, dict[str, Recipe]] = {
    # Zheng et al. 2020 (configs/freenet + SimpleCV): SGD 0.9, wd 1e-3 on all params, poly 0.9 over 1000
    # iterations, grad-norm clip 35, 20 px/class per GS² minibatch, seed 2333, per-band z-score of the scene.
    "freenet": {
        "paper": Recipe(optimizer="sgd", lr=1e-3, weight_decay=1e-3, schedule="poly", epochs=100, iterations=1000,
                        grad_clip=35.0, early_stopping=False, select_best=False, sub_minibatch=20,
                        train=None, train_pixels=200, val=0.0, max_train_fraction=0.5, seed=2333),
    },
    "morpmamba": {
        # chosen on the validation tiles of EnMAP Potsdam (see BENCHMARKS.md): the notebook's optimiser with a
        # per-band z-score before a 30-component PCA that is not whitened, 1×1 morphology filters (the notebook's
        # 5×5 box filters over a 4×4 window blur the labelled pixel's spectrum into its neighbours'), every window
        # in a random one of the 8 symmetries of the square, and the best validation epoch of a moving average
        "default": dataclasses.replace(
            _MORPMAMBA_NOTEBOOK, select_best=True, augment="dihedral", ema=0.99, model={"kernel": 1},
            chain={"drop_bad_bands": True, "normalize": True, "pca": 30, "pca_whiten": False}),
        "notebook": _MORPMAMBA_NOTEBOOK,
    },
}


def recipe_names(arch: str) -> list[str]:
    """The named recipes of ``arch``, default first ("default" for architectures without their own)."""
    return list(RECIPES.get(arch, {"default": None}))


def recipe_for(arch: str, name: str | None = None) -> Recipe:
    """A copy of recipe ``name`` of ``arch`` (default: its first), or the generic one (Adam 1e-3, early stopping
    on validation OA)."""
    from hsikit.errors import OptionError

    named = RECIPES.get(arch)
    if name is None or (named is None and name == "default"):
        return copy.deepcopy(next(iter(named.values())) if named else Recipe())
    if named is None or name not in named:
        raise OptionError(f"--recipe: {arch} has no recipe {name!r}; it has {', '.join(recipe_names(arch))}")
    return copy.deepcopy(named[name])
