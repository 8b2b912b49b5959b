"""Stratified splits at the real class distributions of the benchmark ground truths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from hsikit.errors import InputError, OptionError
from hsikit.sampling import (Amount, amount_option, holdout_split, parse_fraction, split_from_raster,
                             stratified_split)
from hsikit.training.recipes import recipe_for


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


def test_paper_protocols_keep_their_numbers(gt):
    """FreeNet: 200 px/class capped at half a class, no validation; MorpMamba: 25 % / 25 %; the rest tests."""
    sizes = dict(zip(*np.unique(gt[gt > 0], return_counts=True)))
    train, val = recipe_for("freenet").paper_split()
    sp = stratified_split(gt, train=train, val=val, seed=2333, max_train_fraction=0.5)
    counts = sp.counts(gt)
    assert counts["val"] == {}
    assert all(counts["train"][c] == min(200, n // 2) for c, n in sizes.items())
    assert all(counts["test"][c] == n - min(200, n // 2) for c, n in sizes.items())
    train, val = recipe_for("morpmamba").paper_split()
    counts = stratified_split(gt, train=train, val=val, seed=0).counts(gt)
    assert all(counts["train"][c] == round(0.25 * n) and counts["val"][c] == round(0.25 * n) for c, n in sizes.items())


def test_holdout_trains_on_every_pixel_but_validation(gt):
    sizes = dict(zip(*np.unique(gt[gt > 0], return_counts=True)))
    sp = holdout_split(gt, val=Amount(fraction=0.1), seed=0)
    counts = sp.counts(gt)
    assert not sp.test.any() and not (sp.train & sp.val).any()
    assert (sp.train | sp.val).sum() == (gt > 0).sum()
    for c, n in sizes.items():
        assert counts["val"][c] == max(1, round(0.1 * n)) and counts["train"][c] == n - counts["val"][c]


def test_holdout_amounts():
    lab = np.repeat([1, 2, 3], [1, 2, 40]).reshape(1, -1)
    sp = holdout_split(lab, val=Amount(fraction=0.1), seed=0)
    assert sp.counts(lab)["val"] == {2: 1, 3: 4}, "a class of two still gets one validation pixel; one of one trains"
    assert sp.counts(lab)["train"] == {1: 1, 2: 1, 3: 36}
    one = holdout_split(lab, val=Amount(pixels=0), train=Amount(pixels=1), seed=0)
    assert one.counts(lab)["train"] == {1: 1, 2: 1, 3: 1} and not one.val.any()
    half = holdout_split(lab, val=Amount(fraction=0.0), train=Amount(fraction=0.5), seed=0)
    assert half.counts(lab)["train"] == {1: 1, 2: 1, 3: 20}
    with pytest.warns(UserWarning, match="too few"):
        big = holdout_split(lab, val=Amount(pixels=5), seed=0)
    assert big.counts(lab)["train"] == {1: 1, 2: 1, 3: 35}


def test_fractions_and_counts_are_unambiguous():
    lab = np.repeat([1, 2], [10, 30]).reshape(1, -1)
    assert stratified_split(lab, train=1, seed=0).counts(lab)["train"] == {1: 1, 2: 1}, "an int counts pixels"
    with pytest.warns(UserWarning, match="too few"):
        assert stratified_split(lab, train=1.0, seed=0).counts(lab)["train"] == {1: 9, 2: 29}, "1.0: all but a test px"
    with pytest.raises(OptionError, match="a fraction lies in"):
        stratified_split(lab, train=1.5)
    assert parse_fraction("80%", "--train") == 0.8 and parse_fraction(1, "--train") == 1.0
    assert parse_fraction("0", "--val", allow_zero=True, allow_one=False) == 0.0
    for bad, kw in [("0", {}), ("1.5", {}), ("200", {}), ("150%", {}), ("-0.1", {}), ("abc", {}), ("nan", {}),
                    ("1", {"allow_zero": True, "allow_one": False})]:
        with pytest.raises(OptionError, match=r"^--train ") as e:
            parse_fraction(bad, "--train", **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(OptionError, match="--train-pixels 200"):
        parse_fraction("200", "--train")
    assert amount_option(None, 3, "--train") == Amount(pixels=3) and amount_option(None, None, "--val") is None
    with pytest.raises(OptionError, match="not both"):
        amount_option("0.5", 3, "--train")
    with pytest.raises(OptionError, match="--train-pixels 0"):
        amount_option(None, 0, "--train")


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
