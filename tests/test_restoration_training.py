"""Restoration training pieces: crops, spectral windows, batches reproducible with a seed, task sampling, schedules."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hsikit.restoration.tasks import TASKS, task_sampler  # noqa: E402
from hsikit.training.restoration import (  # noqa: E402
    RestorationModule,
    CropBatches,
    augment,
    random_crop,
    restoration_recipe,
    validation_pairs,
)


def _cube(c=12, h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((c, h, w), dtype=np.float32)


def test_random_crop_avoids_invalid_pixels():
    x = _cube()
    v = np.ones(x.shape[1:], bool)
    v[:, :30] = False  # only columns 30..49 are valid
    for s in range(20):
        crop = random_crop([x], [v], 16, np.random.default_rng(s))
        assert crop.shape == (12, 16, 16)
        # the crop is a valid window: it matches x at some column >= 30
        hits = [(r, q) for r in range(25) for q in range(30, 35) if np.array_equal(x[:, r : r + 16, q : q + 16], crop)]
        assert hits


def test_augment_is_one_of_the_eight_dihedral_modes():
    x = _cube(2, 5, 5)
    seen = set()
    for s in range(60):
        y = augment(x, np.random.default_rng(s))
        modes = [k for k in range(8) if np.array_equal(
            y, (lambda z: z[:, :, ::-1] if k >= 4 else z)(np.rot90(x, k % 4, axes=(1, 2))))]
        assert modes
        seen.add(modes[0])
    assert seen == set(range(8))


def test_batches_are_reproducible_and_spectral_windows_apply():
    x, v = _cube(40), np.ones((40, 50), bool)
    recipe = restoration_recipe("hsdt").replace(crop=16, batch_size=3, seed=5)
    assert recipe.spectral_window == 31

    def noisy(c, rng):
        return c + rng.normal(0, 0.1, c.shape).astype(np.float32), -1

    da, db = CropBatches([x], [v], noisy, recipe, 4), CropBatches([x], [v], noisy, recipe, 4)
    a = [da[i] for i in range(4)]
    b = [db[i] for i in range(4)]
    for (xa, ya, ta), (xb, yb, tb) in zip(a, b):
        assert xa.shape == (3, 31, 16, 16) and torch.equal(xa, xb) and torch.equal(ya, yb)
        assert (ta == -1).all()
    assert not torch.equal(a[0][0], a[1][0])  # successive batches differ


def test_validation_pairs_fixed_by_seed():
    x, v = _cube(), np.ones((40, 50), bool)
    f = lambda c, rng: (c * rng.random(), 0)  # noqa: E731
    p = validation_pairs([x], [v], f, 16, 3, seed=1)
    q = validation_pairs([x], [v], f, 16, 3, seed=1)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(p, q))


@pytest.mark.parametrize("task", TASKS)
def test_task_samplers_keep_shape_and_are_seeded(task):
    x = _cube(10, 32, 32)
    f = task_sampler(task, wavelengths=np.linspace(420, 2400, 10))
    y1, y2 = f(x, np.random.default_rng(3)), f(x, np.random.default_rng(3))
    assert y1.shape == x.shape and np.array_equal(y1, y2) and not np.array_equal(y1, x)


@pytest.mark.parametrize("schedule,warmup", [("cosine", 0.0), ("warmup-cosine", 0.1)])
def test_learning_rate_schedules(schedule, warmup):
    net = torch.nn.Conv2d(1, 1, 1)
    recipe = restoration_recipe("essaformer").replace(schedule=schedule, warmup=warmup, lr=1e-3, min_lr=1e-6)
    mod = RestorationModule(net, recipe, [], total_steps=100)
    cfg = mod.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if warmup:
        assert lrs[0] < lrs[5] < lrs[10] and lrs[10] == pytest.approx(1e-3, rel=0.05)
    else:
        assert lrs[0] == pytest.approx(1e-3)
    assert lrs[100] == pytest.approx(1e-6, rel=1e-3) and all(a >= b - 1e-12 for a, b in zip(lrs[11:], lrs[12:]))
