"""OA/AA/kappa/F1 against scikit-learn and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, confusion_matrix as sk_cm, f1_score

from hsikit.metrics import confusion_matrix, scores


def test_against_sklearn():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, 500)
    pred = np.where(rng.random(500) < 0.7, ref, rng.integers(0, 5, 500))
    cm = confusion_matrix(ref, pred, 5)
    np.testing.assert_array_equal(cm, sk_cm(ref, pred, labels=range(5)))
    s = scores(cm)
    assert s["oa"] == pytest.approx((ref == pred).mean())
    assert s["aa"] == pytest.approx(balanced_accuracy_score(ref, pred))
    assert s["kappa"] == pytest.approx(cohen_kappa_score(ref, pred))
    np.testing.assert_allclose(s["per_class_f1"], f1_score(ref, pred, average=None, labels=range(5)))


def test_hand_computed():
    # reference 0,0,0,1 ; predicted 0,0,1,1
    cm = confusion_matrix([0, 0, 0, 1], [0, 0, 1, 1], 2)
    assert cm.tolist() == [[2, 1], [0, 1]]
    s = scores(cm)
    assert s["oa"] == 0.75
    assert s["aa"] == pytest.approx((2 / 3 + 1) / 2)
    # pe = (3*2 + 1*2) / 16 = 0.5 ; kappa = (0.75 - 0.5) / 0.5
    assert s["kappa"] == pytest.approx(0.5)


def test_absent_class_not_in_aa():
    s = scores(confusion_matrix([0, 0, 1], [0, 0, 1], 3))
    assert s["aa"] == 1.0 and s["support"] == [2, 1, 0]
