"""RBF support vector machine on pixel spectra: trained with scikit-learn, run in torch from safetensors buffers.

Checkpoints never unpickle, so a fitted ``sklearn.svm.SVC`` is exported into the buffers of :class:`RBFSVM`
(support vectors, dual coefficients, intercepts, per-class support counts, class ids) and its prediction is
recomputed in float64 torch: the one-vs-one decision values of libsvm, the votes, and libsvm's tie-break.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hsikit.models.registry import register_model

# Score of classes the SVM never saw: below every trained class, and ~0 probability after a softmax.
ABSENT_SCORE = -1.0e4


@dataclass
class SVMConfig:
    """Buffer sizes of an exported SVC; :func:`svm_from_sklearn` fills them.

    ``n_fitted_classes``: classes present in training (0 means all ``num_classes``); ``gamma``: the numeric RBF
    width sklearn used (``gamma="scale"`` resolved).
    """

    in_bands: int
    num_classes: int
    n_support: int = 0
    gamma: float = 0.0
    n_fitted_classes: int = 0


class RBFSVM(nn.Module):
    """sklearn ``SVC(kernel="rbf")`` prediction in torch. Input (N, B, H, W) -> class scores (N, K, H, W).

    The score of class k is its one-vs-one vote count plus ``s / (6 (|s| + 1))`` in (-1/6, 1/6), where ``s`` sums
    the decision values for k (sklearn's "ovr" confidence, at half its scale), and, where several classes share the
    most votes, a half vote for the one libsvm picks (the lowest class index). So ``argmax`` over classes equals
    ``SVC.predict`` with a margin of at least 1/6, which survives float32. Classes absent from training score
    :data:`ABSENT_SCORE`. Kernels are computed in float64 on ``chunk_pixels`` pixels at a time (default: about
    64 MB of kernel matrix per chunk).
    """

    def __init__(self, cfg: SVMConfig, chunk_pixels: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk_pixels = chunk_pixels
        n_cls = cfg.n_fitted_classes or cfg.num_classes
        if not 1 <= n_cls <= cfg.num_classes:
            raise ValueError(f"n_fitted_classes={cfg.n_fitted_classes} must be in 1..num_classes={cfg.num_classes}")
        n_pairs = n_cls * (n_cls - 1) // 2
        f64 = torch.float64
        self.register_buffer("support_vectors", torch.zeros(cfg.n_support, cfg.in_bands, dtype=f64))
        # libsvm's layout and signs (sklearn's _dual_coef_/_intercept_): row j-1 holds the coefficients of class
        # i's support vectors in pair (i, j), row i those of class j's; decision = sum coef * K + intercept.
        self.register_buffer("dual_coef", torch.zeros(max(n_cls - 1, 0), cfg.n_support, dtype=f64))
        self.register_buffer("intercept", torch.zeros(n_pairs, dtype=f64))
        n_sup = torch.zeros(n_cls, dtype=torch.int64)
        n_sup[0] = cfg.n_support  # consistent placeholder until real weights are loaded
        self.register_buffer("n_support", n_sup)
        self.register_buffer("classes", torch.arange(n_cls, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b, h, w = x.shape
        if b != self.cfg.in_bands:
            raise ValueError(f"RBFSVM expects {self.cfg.in_bands} bands, got {b}")
        out_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        flat = x.permute(0, 2, 3, 1).reshape(-1, b)
        with torch.autocast(x.device.type, enabled=False):
            scores = self.scores(flat)
        return scores.to(out_dtype).reshape(n, h, w, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def scores(self, spectra: torch.Tensor) -> torch.Tensor:
        """Class scores (P, num_classes) float64 of spectra (P, B), computed in chunks."""
        sv = self.support_vectors
        # Centring on the support vectors' mean keeps |x|^2 + |s|^2 - 2 x.s from cancelling on spectra that are
        # far from the origin compared with their distances (reflectances).
        mu = sv.mean(0) if sv.shape[0] else sv.new_zeros(sv.shape[1])
        svc = sv - mu
        sv_sq = (svc * svc).sum(1)
        weights, onehot_i, onehot_j = self._pair_matrices()
        chunk = self.chunk_pixels or max(256, (1 << 23) // max(1, sv.shape[0]))
        out = torch.full((spectra.shape[0], self.cfg.num_classes), ABSENT_SCORE, dtype=torch.float64,
                         device=spectra.device)
        weights_t = weights.T.contiguous()
        for s in range(0, spectra.shape[0], chunk):
            xc = spectra[s : s + chunk].to(torch.float64) - mu
            kern = torch.addmm(sv_sq[None, :], xc, svc.T, alpha=-2.0)  # squared distances, in place from here
            kern.add_((xc * xc).sum(1, keepdim=True)).clamp_min_(0.0).mul_(-self.cfg.gamma).exp_()
            # (pairs, P) then transposed: ~2x faster than kern @ weights for the skinny weight matrix on CPU
            dec = (weights_t @ kern.T).T + self.intercept  # libsvm's one-vs-one decision values (P, pairs)
            out[s : s + chunk, self.classes] = self._votes_to_scores(dec, onehot_i, onehot_j)
        return out

    def _pair_matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(support vectors x pairs) coefficient matrix and (pairs x classes) one-hots of each pair's i and j."""
        n_cls, dev = self.n_support.shape[0], self.support_vectors.device
        pi, pj = torch.triu_indices(n_cls, n_cls, offset=1, device=dev)  # libsvm's pair order: i < j, row-major
        sv_class = torch.repeat_interleave(torch.arange(n_cls, device=dev), self.n_support)
        coef_t = self.dual_coef.T  # (n_sv, n_cls - 1)
        if pi.numel():
            w_i = torch.where(sv_class[:, None] == pi, coef_t[:, pj - 1], 0.0)
            w_j = torch.where(sv_class[:, None] == pj, coef_t[:, pi], 0.0)
            weights = w_i + w_j
        else:
            weights = coef_t.new_zeros(coef_t.shape[0], 0)
        eye = torch.eye(n_cls, dtype=torch.float64, device=dev)
        return weights, eye[pi], eye[pj]

    @staticmethod
    def _votes_to_scores(dec: torch.Tensor, onehot_i: torch.Tensor, onehot_j: torch.Tensor) -> torch.Tensor:
        n_cls = onehot_i.shape[1]
        if n_cls == 1:
            return dec.new_ones(dec.shape[0], 1)
        win_i = (dec > 0).to(dec.dtype)  # libsvm: a decision value of exactly 0 votes for j
        votes = win_i @ onehot_i + (1.0 - win_i) @ onehot_j
        conf = dec @ (onehot_i - onehot_j)
        # libsvm keeps the first class with the most votes; the key is unique, so argmax order cannot matter
        key = votes * n_cls - torch.arange(n_cls, dtype=dec.dtype, device=dec.device)
        winner = key.argmax(1, keepdim=True)
        top = votes.max(1, keepdim=True).values
        tied = ((votes == top).sum(1, keepdim=True) > 1).to(dec.dtype)
        bonus = torch.zeros_like(votes).scatter_(1, winner, 0.5) * tied
        return votes + conf / (6.0 * (conf.abs() + 1.0)) + bonus

    def predict(self, spectra: torch.Tensor) -> torch.Tensor:
        """Class ids (P,) of spectra (P, B), as ``SVC.predict`` gives them."""
        return self.scores(spectra).argmax(1)


@register_model(
    "svm",
    task="classification",
    description="RBF support vector machine on pixel spectra (scikit-learn SVC, exported to torch buffers)",
    inputs="pixel spectra",
    config_cls=SVMConfig,
    receptive_field=lambda cfg: 0,
)
def build_svm(cfg: SVMConfig) -> nn.Module:
    return RBFSVM(cfg)


def class_ids(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """sklearn ``classes_`` as int64 ids, checked to lie in 0..num_classes-1."""
    c = np.asarray(classes)
    if c.dtype.kind not in "iuf" or (c.dtype.kind == "f" and not np.all(c == np.round(c))):
        raise ValueError(f"class labels must be integer ids 0..{num_classes - 1}, got {c[:5]!r}")
    ids = c.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"class ids {ids.tolist()} outside 0..{num_classes - 1}")
    return ids


def svm_from_sklearn(svc: Any, num_classes: int) -> RBFSVM:
    """Export a fitted ``sklearn.svm.SVC(kernel="rbf")`` whose labels are ids in 0..num_classes-1 (some may be
    absent from training) into an :class:`RBFSVM`."""
    from sklearn.svm import SVC

    if not isinstance(svc, SVC) or not hasattr(svc, "support_vectors_"):
        raise ValueError("svm_from_sklearn needs a fitted sklearn.svm.SVC")
    if svc.kernel != "rbf":
        raise ValueError(f"only the RBF kernel is supported, not {svc.kernel!r}")
    classes = class_ids(svc.classes_, num_classes)
    if svc.break_ties and svc.decision_function_shape == "ovr" and len(classes) > 2:
        raise ValueError("break_ties=True predicts from the ovr decision function; export an SVC with break_ties=False")
    sv = svc.support_vectors_
    sv = np.asarray(sv.toarray() if hasattr(sv, "toarray") else sv, dtype=np.float64)
    dual = svc.dual_coef_
    dual = np.asarray(dual.toarray() if hasattr(dual, "toarray") else dual, dtype=np.float64)
    intercept = np.asarray(svc.intercept_, dtype=np.float64)
    if len(classes) == 2:  # sklearn flips the public binary coefficients; libsvm's own signs are needed here
        dual, intercept = -dual, -intercept
    # sklearn keeps the resolved gamma ("scale" -> 1 / (n_features * X.var())) only in the private _gamma
    gamma = float(getattr(svc, "_gamma", svc.gamma))
    if not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"cannot resolve the RBF gamma of this SVC ({svc.gamma!r})")
    cfg = SVMConfig(in_bands=int(sv.shape[1]), num_classes=int(num_classes), n_support=int(sv.shape[0]),
                    gamma=gamma, n_fitted_classes=len(classes))
    model = RBFSVM(cfg)
    model.load_state_dict({
        "support_vectors": torch.from_numpy(np.ascontiguousarray(sv)),
        "dual_coef": torch.from_numpy(np.ascontiguousarray(dual)),
        "intercept": torch.from_numpy(np.ascontiguousarray(intercept)),
        "n_support": torch.from_numpy(np.asarray(svc.n_support_, dtype=np.int64)),
        "classes": torch.from_numpy(classes),
    })
    return model.eval()


def stratified_subset(y: np.ndarray, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``max_n`` samples keeping class proportions (every class keeps at least one), sorted."""
    n = len(y)
    if max_n is None or n <= max_n:
        return np.arange(n)
    picked = []
    for c, count in zip(*np.unique(y, return_counts=True)):
        idx = np.flatnonzero(y == c)
        k = min(count, max(1, int(round(max_n * count / n))))
        picked.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picked))


def fit_svm(
    X: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None = None,
    C: float = 100.0,
    gamma: float | str = "scale",
    search: bool = False,
    C_grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0),
    gamma_factors: tuple[float, ...] = (0.25, 1.0, 4.0),
    max_train: int | None = 20000,
    max_search: int = 3000,
    seed: int = 0,
    n_jobs: int = -1,
    cache_size: float = 1000.0,
) -> RBFSVM:
    """Fit an RBF ``SVC`` on spectra ``X`` (n, B) with class ids ``y`` (n,) and export it.

    The defaults (C=100, gamma="scale") suit band-normalised spectra, where sklearn's C=1 underfits. ``search``
    picks C from ``C_grid`` and gamma from ``gamma_factors`` times the base gamma (``gamma`` resolved on the
    training spectra) by stratified 3-fold cross-validation on at most ``max_search`` training pixels, which bounds
    its time; the final model is refit with the best pair on at most ``max_train`` pixels (a stratified subset:
    training time grows about quadratically with the pixel count).
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    from hsikit.errors import OptionError

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise OptionError(f"fit_svm needs X (n, bands) and y (n,), got {X.shape} and {y.shape}")
    if C <= 0 or any(c <= 0 for c in C_grid) or any(g <= 0 for g in gamma_factors):
        raise OptionError("C, C_grid and gamma_factors must be positive")
    if num_classes is None:
        num_classes = int(y.max()) + 1
    class_ids(np.unique(y), num_classes)
    if len(np.unique(y)) < 2:
        raise OptionError("an SVM needs training pixels of at least two classes")
    rng = np.random.default_rng(seed)
    sel = stratified_subset(y, max_train, rng)
    Xt, yt = X[sel], y[sel]
    if isinstance(gamma, str):
        if gamma not in ("scale", "auto"):
            raise OptionError(f"gamma must be a positive number, 'scale' or 'auto', not {gamma!r}")
        var = Xt.var()  # sklearn's own rules for "scale" and "auto"
        gamma_value = 1.0 / Xt.shape[1] if gamma == "auto" else (1.0 / (Xt.shape[1] * var) if var != 0 else 1.0)
    else:
        gamma_value = float(gamma)
    if gamma_value <= 0:
        raise OptionError(f"gamma must be positive, got {gamma}")
    best_C, best_gamma = float(C), gamma_value
    if search:
        # classes too rare for three folds would make StratifiedKFold complain; they still enter the final fit
        labels, counts = np.unique(yt, return_counts=True)
        keep = np.isin(yt, labels[counts >= 3])
        s_idx = np.flatnonzero(keep)[stratified_subset(yt[keep], max_search, rng)]
        if len(np.unique(yt[s_idx])) >= 2:
            grid = GridSearchCV(
                SVC(kernel="rbf", cache_size=cache_size),
                {"C": list(C_grid), "gamma": [gamma_value * f for f in gamma_factors]},
                cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                n_jobs=n_jobs,
            )
            grid.fit(Xt[s_idx], yt[s_idx])
            best_C, best_gamma = float(grid.best_params_["C"]), float(grid.best_params_["gamma"])
    svc = SVC(kernel="rbf", C=best_C, gamma=best_gamma, cache_size=cache_size, random_state=seed)
    svc.fit(Xt, yt)
    return svm_from_sklearn(svc, num_classes)
