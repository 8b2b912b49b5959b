"""Named training recipes, the dihedral window augmentation and the moving average of the weights."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clirun import cli
from hsikit.errors import OptionError
from hsikit.training.data import PatchData
from hsikit.training.module import ClassifierModule
from hsikit.training.recipes import Recipe, recipe_for, recipe_names


def test_morpmamba_has_a_default_and_the_notebook_recipe():
    assert recipe_names("morpmamba") == ["default", "notebook"]
    nb = recipe_for("morpmamba", "notebook")
    assert nb.chain == {"drop_bad_bands": True, "pca": 15, "pca_whiten": True}
    assert not nb.select_best and nb.augment == "none" and nb.ema == 0 and (nb.train, nb.val) == (0.25, 0.25)
    default = recipe_for("morpmamba")
    assert default == recipe_for("morpmamba", "default") and default != nb
    assert not default.chain.get("pca_whiten") and default.select_best
    assert (default.train, default.val) == (0.25, 0.25)  # the paper's split stays under --protocol paper
    assert recipe_for("freenet") == recipe_for("freenet", "paper") and recipe_names("unet") == ["default"]
    assert recipe_for("unet", "default") == Recipe()
    recipe_for("morpmamba").lr = 5.0  # a copy
    assert recipe_for("morpmamba").lr != 5.0
    mutated = recipe_for("morpmamba")
    mutated.chain["pca"], mutated.model["kernel"] = 99, 7  # nested options are copies too
    assert recipe_for("morpmamba").chain["pca"] == 30 and recipe_for("morpmamba").model == {"kernel": 1}
    with pytest.raises(OptionError, match="morpmamba has no recipe 'paper'; it has default, notebook"):
        recipe_for("morpmamba", "paper")


def test_an_unknown_recipe_is_one_line_before_any_work(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "classifier", "--dataset", "indian_pines", "-m", "unet", "--recipe",
                       "notebook", "-o", tmp_path / "m.safetensors")
    assert code == 2 and err.strip() == "error: --recipe: unet has no recipe 'notebook'; it has default", err
    assert not any(tmp_path.iterdir())


def _window(x: np.ndarray, r: int, c: int, p: int, flip_r: bool, flip_c: bool, swap: bool) -> np.ndarray:
    """The reference: P×P neighbourhood of (r, c) with the pixel at (P//2, P//2), mirrored about that pixel."""
    lo = p // 2
    out = np.zeros((x.shape[0], p, p), x.dtype)
    for i, j in itertools.product(range(p), range(p)):
        dr, dc = (lo - i if flip_r else i - lo), (lo - j if flip_c else j - lo)
        if swap:
            dr, dc = (lo - j if flip_r else j - lo), (lo - i if flip_c else i - lo)
        rr, cc = r + dr, c + dc
        if 0 <= rr < x.shape[1] and 0 <= cc < x.shape[2]:
            out[:, i, j] = x[:, rr, cc]
    return out


@pytest.mark.parametrize("patch", [4, 5])
def test_dihedral_windows_mirror_the_neighbourhood_about_the_labelled_pixel(patch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 8)).astype(np.float32)
    labels = np.ones((7, 8), np.int64)
    data = PatchData(x, labels, labels > 0, patch=patch, augment="dihedral")
    rows, cols = np.nonzero(labels)
    flips = list(itertools.product([False, True], repeat=3))
    for f in flips:
        fl = torch.tensor([f] * rows.size)
        w = data.windows(torch.from_numpy(rows), torch.from_numpy(cols), fl).numpy()
        for k, (r, c) in enumerate(zip(rows, cols)):
            np.testing.assert_array_equal(w[k], _window(x, r, c, patch, *f))
            np.testing.assert_array_equal(w[k, :, patch // 2, patch // 2], x[:, r, c])
    # no flips: the plain windows of inference
    plain = data.windows(torch.from_numpy(rows), torch.from_numpy(cols)).numpy()
    assert all(np.array_equal(plain[k], _window(x, r, c, patch, False, False, False))
               for k, (r, c) in enumerate(zip(rows, cols)))
    # training draws a mix of all eight, reproducibly from the seed
    batch = (torch.from_numpy(rows), torch.from_numpy(cols), torch.zeros(rows.size, dtype=torch.long))
    seen = []

    class Net(torch.nn.Module):
        def forward_patches(self, w):
            seen.append(w)
            return torch.zeros(w.shape[0], 2, requires_grad=True)

    data.loss(Net(), batch)
    kinds = {next(i for i, f in enumerate(flips)
                  if np.array_equal(seen[0][k].numpy(), _window(x, r, c, patch, *f)))
             for k, (r, c) in enumerate(zip(rows, cols)) if 1 < r < 5 and 1 < c < 6}
    assert len(kinds) >= 6
    again = PatchData(x, labels, labels > 0, patch=patch, augment="dihedral")
    again.loss(Net(), batch)
    assert torch.equal(seen[0], seen[1])


def test_the_moving_average_ramps_up_then_decays_at_the_recipe_rate():
    net = torch.nn.Linear(3, 2)
    stub = SimpleNamespace(net=net, recipe=Recipe(ema=0.5), ema_state=None, global_step=0)
    w0 = net.weight.detach().clone()
    ClassifierModule._update_ema(stub)  # the first step copies the weights
    assert torch.equal(stub.ema_state["weight"], w0)
    with torch.no_grad():
        net.weight.add_(1.0)
    ClassifierModule._update_ema(stub)  # step 0: decay (1 + 0) / 10
    torch.testing.assert_close(stub.ema_state["weight"], 0.1 * w0 + 0.9 * (w0 + 1))
    stub.global_step = 100
    before = stub.ema_state["weight"].clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ClassifierModule._update_ema(stub)  # later: the recipe's decay
    torch.testing.assert_close(stub.ema_state["weight"], 0.5 * before + 0.5 * (w0 + 2))


def test_a_validation_tie_keeps_the_later_epoch():
    """Small validation sets plateau early (e.g. 1 error in 100); the same score later means more training."""
    import math

    net = torch.nn.Linear(2, 2)
    val_y = np.zeros(10, np.int64)
    correct = iter([5, 9, 9, 8])  # validation OA 0.5, 0.9, 0.9, 0.8
    data = SimpleNamespace(predict=lambda *_: np.where(np.arange(10) < next(correct), 0, 1))
    stub = SimpleNamespace(net=net, recipe=Recipe(select_best=True), _epoch_loss=[], history=[], best_state=None,
                           best_score=-math.inf, val_y=val_y, val_mask=None, data=data, device="cpu",
                           trainer=SimpleNamespace(optimizers=[], world_size=1), log=lambda *a, **k: None,
                           kept_state=lambda: None, global_step=0)
    for epoch in range(4):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        stub._epoch_loss = [1.0]
        ClassifierModule.on_train_epoch_end(stub)
    assert [h["val_oa"] for h in stub.history] == [0.5, 0.9, 0.9, 0.8]
    assert stub.best_score == 0.9 and float(stub.best_state["weight"][0, 0]) == 2.0  # epoch 3, not epoch 2
