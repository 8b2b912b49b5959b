"""Stratified splits at the real class distributions of the benchmark ground truths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from hsikit.errors import InputError
from hsikit.sampling import split_from_raster, stratified_split


@pytest.fixture(params=[("indian_pines_gt/Indian_pines_gt.mat", "y"), ("pavia_university_gt/PaviaU_gt.mat", "hyperimg_gt")])
def gt(request, shared_data):
    path, key = request.param
    return scipy.io.loadmat(shared_data / path)[key].astype(np.int32)


def test_fixed_counts_per_class(gt):
    with pytest.warns(UserWarning) if (np.bincount(gt.ravel())[1:] < 31).any() else _nowarn():
        sp = stratified_split(gt, train=20, val=10, seed=1)
    counts = sp.counts(gt)
    for c, n in zip(*np.unique(gt[gt > 0], return_counts=True)):
        if n >= 31:
            assert counts["train"][c] == 20 and counts["val"][c] == 10
        assert counts["test"].get(c, 0) >= 1, "every class keeps test pixels"
    assert not (sp.train & sp.val).any() and not (sp.train & sp.test).any() and not (sp.val & sp.test).any()
    assert not (gt[sp.train | sp.val | sp.test] == 0).any(), "unlabelled pixels are never sampled"
    assert (sp.train | sp.val | sp.test).sum() == (gt > 0).sum()


def test_fraction_and_seed(gt):
    a = stratified_split(gt, train=0.1, seed=7)
    b = stratified_split(gt, train=0.1, seed=7)
    c = stratified_split(gt, train=0.1, seed=8)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    for cl, n in zip(*np.unique(gt[gt > 0], return_counts=True)):
        assert a.counts(gt)["train"][cl] == round(0.1 * n)


def test_small_class_warns():
    lab = np.array([[1, 1, 2, 2, 2, 2, 2, 2]])
    with pytest.warns(UserWarning, match="too few"):
        sp = stratified_split(lab, train=3, seed=0)
    assert sp.train[lab == 1].sum() == 1 and sp.test[lab == 1].sum() == 1


def test_split_raster_and_errors():
    lab = np.array([[0, 1, 1, 2]])
    sp = split_from_raster(np.array([[1, 1, 2, 3]]), lab)
    assert sp.train.tolist() == [[False, True, False, False]]
    with pytest.raises(InputError):
        stratified_split(np.zeros((3, 3), int), train=2)


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
