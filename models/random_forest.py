"""Random forest on pixel spectra: trained with scikit-learn, run in torch from safetensors buffers.

Checkpoints never unpickle, so every tree of a fitted ``sklearn.ensemble.RandomForestClassifier`` is exported into
padded tensors of :class:`RandomForest`, which walks all trees for all pixels at once, one level per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.registry import register_model


@dataclass
class RandomForestConfig:
    """Buffer sizes of an exported forest; :func:`rf_from_sklearn` fills them.

    ``max_nodes``: split (internal) nodes of the largest tree; ``max_leaves``: leaves of the largest tree (0 means
    ``max_nodes + 1``, the most a binary tree with ``max_nodes`` splits can have).
    """

    in_bands: int
    num_classes: int
    n_trees: int = 1
    max_nodes: int = 1
    max_leaves: int = 0


class RandomForest(nn.Module):
    """sklearn ``RandomForestClassifier.predict_proba`` in torch. Input (N, B, H, W) -> probabilities (N, K, H, W).

    Per tree t, split node n (numbered 0..max_nodes-1, root 0) sends a spectrum to ``children_left[t, n]`` when
    ``x[feature[t, n]] <= threshold[t, n]`` (NaN follows ``missing_left``), else to ``children_right[t, n]``. A
    child >= 0 is a split node, a child < 0 is leaf ``~child`` whose class probabilities are ``value[t, ~child]``.
    Padding entries are never reached. Spectra are rounded to float32 first, as sklearn's trees do.
    """

    outputs_probabilities = True  # tells hsikit.classify not to apply a softmax

    def __init__(self, cfg: RandomForestConfig, chunk_pixels: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk_pixels = chunk_pixels
        self._cache: dict[str, Any] | None = None
        t, m = cfg.n_trees, cfg.max_nodes
        if t < 1 or m < 1:
            raise ValueError("a forest needs n_trees >= 1 and max_nodes >= 1")
        leaves = cfg.max_leaves or m + 1
        self.register_buffer("children_left", torch.full((t, m), -1, dtype=torch.int32))
        self.register_buffer("children_right", torch.full((t, m), -1, dtype=torch.int32))
        self.register_buffer("feature", torch.zeros(t, m, dtype=torch.int32))
        self.register_buffer("threshold", torch.zeros(t, m, dtype=torch.float64))
        self.register_buffer("missing_left", torch.zeros(t, m, dtype=torch.bool))
        # float32 leaf probabilities: half the size of float64 and still within 1e-7 of sklearn after averaging
        self.register_buffer("value", torch.zeros(t, leaves, cfg.num_classes, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b, h, w = x.shape
        if b != self.cfg.in_bands:
            raise ValueError(f"RandomForest expects {self.cfg.in_bands} bands, got {b}")
        out_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        proba = self.predict_proba(x.permute(0, 2, 3, 1).reshape(-1, b))
        return proba.to(out_dtype).reshape(n, h, w, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def predict_proba(self, spectra: torch.Tensor) -> torch.Tensor:
        """Mean class probabilities (P, num_classes) float64 of spectra (P, B), computed in chunks."""
        tab = self._tables()
        t = self.cfg.n_trees
        chunk = self.chunk_pixels or max(16, (1 << 20) // t)  # ~1M (pixel, tree) pairs, ~64 MB of state
        out = torch.empty(spectra.shape[0], self.cfg.num_classes, dtype=torch.float64, device=spectra.device)
        for s in range(0, spectra.shape[0], chunk):
            leaves = self._leaves(spectra[s : s + chunk], tab)
            hi = F.embedding_bag(leaves, tab["value_hi"], mode="sum")
            lo = F.embedding_bag(leaves, tab["value_lo"], mode="sum")
            out[s : s + chunk] = (hi.double() + lo.double()) / t
        return out

    def _leaves(self, spectra: torch.Tensor, tab: dict[str, Any]) -> torch.Tensor:
        """Global leaf index (P, T) that each spectrum reaches in each tree."""
        p, b = spectra.shape
        t, dev = self.cfg.n_trees, spectra.device
        first_leaf = 2 * tab["n_splits"]
        xs = spectra.to(torch.float32).contiguous()  # sklearn rounds spectra to float32 before the trees
        xflat = xs.reshape(-1)
        has_nan = bool(torch.isnan(xs).any())
        itype = torch.int32 if max(p * b, p * t, tab["child"].numel()) < 2**31 else torch.long
        # State of the (pixel, tree) pairs, pixel-major: ``node`` is twice the global node id, so that adding the
        # go-right bit indexes the child table. Leaves are absorbing, so pairs that finished early are harmless;
        # they are dropped once they are the majority.
        node = tab["root"].to(itype).repeat(p)
        xoff = (torch.arange(p, device=dev, dtype=itype) * b).repeat_interleave(t)
        pos = torch.arange(p * t, device=dev, dtype=itype)
        leaf = torch.empty(p * t, dtype=itype, device=dev)
        for _ in range(self.cfg.max_nodes):  # no tree is deeper than its number of splits
            xv = xflat.index_select(0, xoff + tab["feature"].index_select(0, node))
            right = xv > tab["threshold"].index_select(0, node)
            if has_nan:
                right |= torch.isnan(xv) & tab["missing_right"].index_select(0, node)
            node = tab["child"].index_select(0, node + right)
            inner = node < first_leaf
            n_inner = int(torch.count_nonzero(inner))
            if n_inner == 0:
                break
            if 2 * n_inner <= node.numel():
                fin = (~inner).nonzero().squeeze(1)
                leaf.index_copy_(0, pos.index_select(0, fin).long(), node.index_select(0, fin))
                keep = inner.nonzero().squeeze(1)
                node, xoff, pos = node.index_select(0, keep), xoff.index_select(0, keep), pos.index_select(0, keep)
        leaf.index_copy_(0, pos.long(), node)
        return (leaf.long() // 2 - tab["n_splits"]).view(p, t)

    def _tables(self) -> dict[str, Any]:
        """The buffers as flat lookup tables over all trees, built once per load or device move.

        Global node ids: split n of tree t is ``t * max_nodes + n``, leaf l of tree t is
        ``n_splits + t * max_leaves + l`` (``n_splits = n_trees * max_nodes``). Tables are indexed by twice the id:
        ``child[2 g + right]`` is twice the id of g's child (a leaf's children are itself); ``feature`` and
        ``threshold`` hold split g's entries at 2 g.
        """
        if self._cache is not None:
            return self._cache
        t, m = self.feature.shape
        n_leaves, k = self.value.shape[1:]
        dev = self.feature.device
        n_splits = t * m
        node_base = (torch.arange(t, device=dev) * m)[:, None]
        leaf_base = n_splits + (torch.arange(t, device=dev) * n_leaves)[:, None]

        def glob(c: torch.Tensor) -> torch.Tensor:
            c = c.long()
            return 2 * torch.where(c >= 0, c + node_base, ~c + leaf_base)

        leaf_ids = 2 * (leaf_base + torch.arange(n_leaves, device=dev)).reshape(-1)
        child = torch.cat([torch.stack([glob(self.children_left), glob(self.children_right)], -1).reshape(-1),
                           leaf_ids.repeat_interleave(2)])

        def per_node(a: torch.Tensor, leaf_fill: float | bool) -> torch.Tensor:
            # split entries then leaf entries, each twice (only even positions are read)
            return torch.cat([a.reshape(-1), a.new_full((t * n_leaves,), leaf_fill)]).repeat_interleave(2)

        thr = self.threshold
        # x <= thr (float64) equals x <= thr rounded down to float32 for float32 x: compare in float32
        thr32 = thr.to(torch.float32)
        thr32 = torch.where(thr32.double() > thr, torch.nextafter(thr32, thr32.new_tensor(-torch.inf)), thr32)
        itype = torch.int32 if child.numel() + 2 < 2**31 else torch.long
        self._cache = {
            "n_splits": n_splits,
            "root": 2 * node_base.reshape(-1),
            "child": child.to(itype),
            "feature": per_node(self.feature, 0).to(itype),
            "threshold": per_node(thr32, 0.0),
            "missing_right": per_node(~self.missing_left, False),
            **self._split_values(self.value.reshape(-1, k), t),
        }
        return self._cache

    @staticmethod
    def _split_values(value: torch.Tensor, n_trees: int) -> dict[str, torch.Tensor]:
        """Leaf probabilities as float32 ``hi + lo`` for fast float32 sums over the trees that stay exact.

        float64 embedding bags are ~40x slower than float32 ones on CPU, and plain float32 sums of 200 trees
        drift by ~1e-6. ``hi`` holds multiples of 2**-b with b small enough that any sum of ``n_trees`` of them
        is exact in float32; ``lo = value - hi`` is below 2**-b, so its float32 sum errs by ~1e-10 at most.
        """
        b = 23 - max(0, math.ceil(math.log2(max(n_trees, 1))))
        v = value.double()
        hi = torch.round(v * 2.0**b) / 2.0**b
        return {"value_hi": hi.float(), "value_lo": (v - hi).float()}

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RandomForest:
        self._cache = None  # .to(device) and friends: rebuild the tables from the moved buffers
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)


@register_model(
    "random-forest",
    task="classification",
    description="Random forest on pixel spectra (scikit-learn, trees exported to torch buffers)",
    inputs="pixel spectra",
    config_cls=RandomForestConfig,
    receptive_field=lambda cfg: 0,
)
def build_random_forest(cfg: RandomForestConfig) -> nn.Module:
    return RandomForest(cfg)


def _tree_arrays(tree: Any, columns: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """One sklearn ``Tree`` as split-node arrays (leaves encoded as ~leaf in the children) and leaf probabilities."""
    cl, cr = tree.children_left, tree.children_right
    is_leaf = cl == -1
    inner, leaves = np.flatnonzero(~is_leaf), np.flatnonzero(is_leaf)
    code = np.empty(tree.node_count, dtype=np.int64)
    code[inner] = np.arange(len(inner))
    code[leaves] = ~np.arange(len(leaves))
    v = np.asarray(tree.value[leaves, 0, :], dtype=np.float64)
    # sklearn >= 1.4 stores fractions, older versions weighted counts; predict_proba normalises either way
    norm = v.sum(1, keepdims=True)
    norm[norm == 0] = 1.0
    value = np.zeros((len(leaves), num_classes), dtype=np.float64)
    value[:, columns] = v / norm
    if len(inner) == 0:  # a single-leaf tree: a dummy root whose both branches end in leaf 0
        return {"left": np.array([-1]), "right": np.array([-1]), "feature": np.array([0]),
                "threshold": np.array([0.0]), "missing_left": np.array([False]), "value": value}
    missing = getattr(tree, "missing_go_to_left", None)
    return {
        "left": code[cl[inner]],
        "right": code[cr[inner]],
        "feature": tree.feature[inner],
        "threshold": tree.threshold[inner],
        "missing_left": np.zeros(len(inner), bool) if missing is None else np.asarray(missing)[inner].astype(bool),
        "value": value,
    }


def rf_from_sklearn(rf: Any, num_classes: int) -> RandomForest:
    """Export a fitted single-output ``sklearn.ensemble.RandomForestClassifier`` (or ``ExtraTreesClassifier``)
    whose labels are ids in 0..num_classes-1 (some may be absent from training) into a :class:`RandomForest`."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    from hsikit.models.svm import class_ids

    if not isinstance(rf, (RandomForestClassifier, ExtraTreesClassifier)) or not hasattr(rf, "estimators_"):
        raise ValueError("rf_from_sklearn needs a fitted sklearn RandomForestClassifier")
    if getattr(rf, "n_outputs_", 1) != 1:
        raise ValueError("multi-output forests are not supported")
    columns = class_ids(rf.classes_, num_classes)
    trees = [_tree_arrays(e.tree_, columns, num_classes) for e in rf.estimators_]
    m = max(len(a["left"]) for a in trees)
    n_leaves = max(len(a["value"]) for a in trees)
    cfg = RandomForestConfig(in_bands=int(rf.n_features_in_), num_classes=int(num_classes), n_trees=len(trees),
                             max_nodes=m, max_leaves=n_leaves)
    model = RandomForest(cfg)
    state = {name: buf.clone() for name, buf in model.state_dict().items()}
    for i, a in enumerate(trees):
        j = len(a["left"])
        state["children_left"][i, :j] = torch.from_numpy(a["left"].astype(np.int32))
        state["children_right"][i, :j] = torch.from_numpy(a["right"].astype(np.int32))
        state["feature"][i, :j] = torch.from_numpy(a["feature"].astype(np.int32))
        state["threshold"][i, :j] = torch.from_numpy(a["threshold"].astype(np.float64))
        state["missing_left"][i, :j] = torch.from_numpy(a["missing_left"])
        state["value"][i, : len(a["value"])] = torch.from_numpy(a["value"].astype(np.float32))
    model.load_state_dict(state)
    return model.eval()


def fit_random_forest(
    X: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None = None,
    n_trees: int = 200,
    max_features: str | int | float | None = "sqrt",
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    class_weight: str | None = None,
    max_train: int | None = None,
    seed: int = 0,
    n_jobs: int = -1,
) -> RandomForest:
    """Fit a ``RandomForestClassifier`` on spectra ``X`` (n, B) with class ids ``y`` (n,) and export it.

    Fully grown trees with sqrt(B) bands tried per split are the usual hyperspectral baseline; ``max_depth`` or
    ``min_samples_leaf`` bound the checkpoint size on large training sets (it grows with the leaf count), and
    ``max_train`` fits on a stratified subset of that many pixels.
    """
    from sklearn.ensemble import RandomForestClassifier

    from hsikit.errors import OptionError
    from hsikit.models.svm import class_ids, stratified_subset

    X = np.asarray(X, dtype=np.float32)  # sklearn's trees work in float32 anyway
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise OptionError(f"fit_random_forest needs X (n, bands) and y (n,), got {X.shape} and {y.shape}")
    if n_trees < 1:
        raise OptionError(f"n_trees must be >= 1, got {n_trees}")
    if num_classes is None:
        num_classes = int(y.max()) + 1
    class_ids(np.unique(y), num_classes)
    sel = stratified_subset(y, max_train, np.random.default_rng(seed))
    rf = RandomForestClassifier(n_estimators=n_trees, max_features=max_features, max_depth=max_depth,
                                min_samples_leaf=min_samples_leaf, class_weight=class_weight, random_state=seed,
                                n_jobs=n_jobs)
    rf.fit(X[sel], y[sel])
    return rf_from_sklearn(rf, num_classes)
