"""Classical baselines (RBF SVM, random forest) exported from scikit-learn to torch buffers: exact agreement with
sklearn, safetensors round trips, chunking and the engine's predictor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC

from hsikit.models.random_forest import RandomForest, fit_random_forest, rf_from_sklearn
from hsikit.models.registry import create_model, get_entry
from hsikit.models.svm import ABSENT_SCORE, RBFSVM, fit_svm, svm_from_sklearn

K = 6  # class ids 0..5; training uses only 0, 2, 3, 5
PRESENT = np.array([0, 2, 3, 5])
BANDS, N_TRAIN, SHAPE = 30, 600, (2, 37, 21)  # held-out pixels as (N, H, W) with odd H, W


@pytest.fixture(scope="module")
def data():
    n_test = int(np.prod(SHAPE))
    X, y = make_classification(n_samples=N_TRAIN + n_test, n_features=BANDS, n_informative=12, n_redundant=6,
                               n_classes=4, n_clusters_per_class=2, flip_y=0.08, class_sep=0.8, random_state=3)
    X = (X * 0.1 + 0.3).astype(np.float32)  # reflectance-like: offset from 0, small spread
    y = PRESENT[y]
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


def as_image(x: np.ndarray) -> torch.Tensor:
    n, h, w = SHAPE
    return torch.from_numpy(x.reshape(n, h, w, -1)).permute(0, 3, 1, 2).contiguous()


def per_pixel(out: torch.Tensor) -> np.ndarray:
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).numpy()


@pytest.fixture(scope="module")
def svc(data):
    X, y, _ = data
    return SVC(kernel="rbf", C=10.0, gamma="scale").fit(X, y)


@pytest.fixture(scope="module")
def forest(data):
    X, y, _ = data
    return RandomForestClassifier(n_estimators=40, class_weight="balanced", min_samples_leaf=2, random_state=0,
                                  n_jobs=1).fit(X, y)


def roundtrip(model: torch.nn.Module, name: str, tmp_path) -> torch.nn.Module:
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    rebuilt = create_model(name, **dataclasses.asdict(model.cfg))
    rebuilt.load_state_dict(load_file(str(path)), strict=True)
    return rebuilt.eval()


def test_registered():
    for name in ("svm", "random-forest"):
        e = get_entry(name)
        assert (e.task, e.inputs) == ("classification", "pixel spectra")
        assert e.receptive_field(e.config_cls(in_bands=4, num_classes=2)) == 0


def test_svm_labels_equal_sklearn_including_ties(data, svc):
    _, _, Xte = data
    m = svm_from_sklearn(svc, K)
    out = m(as_image(Xte))
    assert out.shape == (SHAPE[0], K, *SHAPE[1:]) and out.dtype == torch.float32
    scores = per_pixel(out)
    np.testing.assert_array_equal(scores.argmax(1), svc.predict(Xte))
    assert np.all(scores[:, [1, 4]] == ABSENT_SCORE)
    # the held-out set must contain one-vs-one vote ties, or libsvm's tie-break went untested
    svc.decision_function_shape = "ovo"
    try:
        dec = svc.decision_function(Xte)
    finally:
        svc.decision_function_shape = "ovr"
    pi, pj = np.triu_indices(len(PRESENT), 1)
    votes = np.zeros((len(Xte), len(PRESENT)))
    np.add.at(votes, (np.arange(len(Xte))[:, None].repeat(len(pi), 1), np.where(dec > 0, pi, pj)), 1)
    assert ((votes == votes.max(1, keepdims=True)).sum(1) > 1).sum() >= 5
    # scores are the votes plus a confidence term in (-1/6, 1/6), plus 1/2 for libsvm's pick among tied classes
    extra = scores[:, PRESENT] - votes
    assert np.all((np.abs(extra) < 1 / 6 + 1e-6) | ((extra > 1 / 3 - 1e-6) & (extra < 2 / 3 + 1e-6)))


def test_svm_binary_and_float64(data):
    X, y, Xte = data
    yb = np.where(y < 3, 1, 4)  # two of K classes: sklearn flips the public binary coefficients
    svc = SVC(C=3.0).fit(X.astype(np.float64), yb)
    m = svm_from_sklearn(svc, K)
    x64 = as_image(Xte).double()
    out = m(x64)
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(per_pixel(out).argmax(1), svc.predict(Xte))


def test_svm_roundtrip_and_chunking(data, svc, tmp_path):
    _, _, Xte = data
    m = svm_from_sklearn(svc, K)
    x = as_image(Xte)
    ref = m(x)
    rebuilt = roundtrip(m, "svm", tmp_path)
    assert isinstance(rebuilt, RBFSVM) and rebuilt.cfg == m.cfg
    assert torch.equal(rebuilt(x), ref)
    m.chunk_pixels = 97  # 17 chunks, the last one partial
    small = m(x)
    m.chunk_pixels = 10**9
    assert torch.equal(small, m(x))
    np.testing.assert_array_equal(small.argmax(1).numpy(), ref.argmax(1).numpy())


def test_fit_svm_with_search(data):
    X, y, Xte = data
    m = fit_svm(X, y, search=True, C_grid=(1.0, 100.0), gamma_factors=(0.5, 2.0), max_search=300, n_jobs=1)
    assert m.cfg.num_classes == 6 and m.cfg.n_fitted_classes == 4 and m.cfg.n_support > 0
    pred = per_pixel(m(as_image(Xte))).argmax(1)
    assert set(np.unique(pred)) <= set(PRESENT)
    m2 = fit_svm(X, y, num_classes=8, max_train=200)
    assert m2.cfg.num_classes == 8 and m2.cfg.n_support <= 200


def test_forest_probabilities_equal_sklearn(data, forest):
    _, _, Xte = data
    m = rf_from_sklearn(forest, K)
    out = m(as_image(Xte))
    assert out.shape == (SHAPE[0], K, *SHAPE[1:]) and out.dtype == torch.float32
    ref = np.zeros((len(Xte), K))
    ref[:, forest.classes_] = forest.predict_proba(Xte)
    np.testing.assert_allclose(per_pixel(out), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m.predict_proba(torch.from_numpy(Xte)).numpy(), ref, rtol=0, atol=1e-6)


def test_forest_missing_values_and_single_leaf_trees(data):
    X, y, Xte = data
    rng = np.random.default_rng(0)
    Xn, Xten = X.copy(), Xte.copy()
    Xn[rng.random(Xn.shape) < 0.05] = np.nan
    Xten[rng.random(Xten.shape) < 0.05] = np.nan
    rf = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1).fit(Xn, y)
    ref = np.zeros((len(Xte), K))
    ref[:, rf.classes_] = rf.predict_proba(Xten)
    np.testing.assert_allclose(rf_from_sklearn(rf, K).predict_proba(torch.from_numpy(Xten)).numpy(), ref, atol=1e-6)
    # pure training data: every tree is a single leaf
    rf1 = RandomForestClassifier(n_estimators=3, random_state=0).fit(X[:5], np.full(5, 2))
    p = rf_from_sklearn(rf1, 3).predict_proba(torch.from_numpy(Xte[:4])).numpy()
    np.testing.assert_array_equal(p, np.tile([0.0, 0.0, 1.0], (4, 1)))


def test_forest_roundtrip_chunking_and_engine(data, forest, tmp_path):
    from hsikit.engine.torch_predict import TorchPredictor

    _, _, Xte = data
    m = rf_from_sklearn(forest, K)
    x = as_image(Xte)
    ref = m(x)
    rebuilt = roundtrip(m, "random-forest", tmp_path)
    assert isinstance(rebuilt, RandomForest) and rebuilt.cfg == m.cfg
    assert torch.equal(rebuilt(x), ref)
    m.chunk_pixels = 101  # 16 chunks, the last one partial
    small = m(x)
    m.chunk_pixels = 10**9
    assert torch.equal(small, m(x))
    # the engine runs pixel-local models in inference mode, chunk by chunk
    pred = TorchPredictor(rebuilt, "cpu", softmax=False, pixel_local=True, chunk_pixels=333)
    np.testing.assert_array_equal(pred(x.numpy()), ref.numpy())
    assert torch.equal(rebuilt(x), ref)  # tables cached under inference mode still usable outside it


def test_checkpoint_files(data, svc, forest, tmp_path):
    from hsikit.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint

    _, _, Xte = data
    x = as_image(Xte)
    for name, m in (("svm", svm_from_sklearn(svc, K)), ("random-forest", rf_from_sklearn(forest, K))):
        meta = CheckpointMeta(arch=name, config=dataclasses.asdict(m.cfg), task="classification")
        path = save_checkpoint(tmp_path / f"{name}.safetensors", m, meta)
        loaded, _ = load_checkpoint(path)
        assert torch.equal(loaded(x), m(x))


def test_fit_random_forest_and_errors(data):
    X, y, Xte = data
    m = fit_random_forest(X, y, n_trees=8, seed=1, max_train=300, n_jobs=1)
    assert m.cfg.n_trees == 8 and m.cfg.num_classes == 6
    p = per_pixel(m(as_image(Xte)))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert np.all(p[:, [1, 4]] == 0)
    with pytest.raises(ValueError, match="outside"):
        rf_from_sklearn(RandomForestClassifier(n_estimators=2).fit(X, y), 4)
    with pytest.raises(ValueError, match="RBF"):
        svm_from_sklearn(SVC(kernel="linear").fit(X[:50], y[:50]), K)
    with pytest.raises(ValueError, match="bands"):
        m(torch.zeros(1, BANDS + 1, 3, 3))
