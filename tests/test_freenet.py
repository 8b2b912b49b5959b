"""FreeNet (patch-free FCN) and GS² sampling: output shape and padding, test pixels never reaching the loss, one
GS² epoch at 200 px/class giving 10 disjoint minibatches of at most 20 px per class whose union is the training
set, the poly learning-rate schedule (1e-3 · (1 - i/1000)^0.9) with gradient clipping at norm 35, the parameter
count of the layer list, and more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsikit.models import create_model
from hsikit.models.registry import get_entry
from hsikit.sampling import gs2_minibatches, stratified_split
from hsikit.training.data import GS2Data
from hsikit.training.recipes import recipe_for


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("bands,classes,expected", [(200, 16, 2.80e6), (103, 9, 2.71e6)])
def test_parameter_count_matches_the_layer_list(bands, classes, expected):
    n = _nparams(create_model("freenet", in_bands=bands, num_classes=classes))
    assert abs(n - expected) / expected < 0.01, n


@pytest.mark.parametrize("h,w", [(37, 51), (16, 16), (1, 70), (145, 145)])
def test_output_shape_for_any_size(h, w):
    net = create_model("freenet", in_bands=5, num_classes=3, reduction_ratio=0.25).eval()
    assert net(torch.randn(2, 5, h, w)).shape == (2, 3, h, w)


def test_padding_is_zeros_bottom_right_to_16():
    """Input 145x145 -> the network sees 160x160 with zeros appended: the top-left output equals the output
    on the explicitly zero-padded input."""
    torch.manual_seed(0)
    net = create_model("freenet", in_bands=4, num_classes=3, reduction_ratio=0.25).eval()
    x = torch.randn(1, 4, 145, 145)
    padded = torch.nn.functional.pad(x, (0, 15, 0, 15))
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[..., :145, :145], atol=1e-5)


def test_width_rule_and_group_norm():
    net = create_model("freenet", in_bands=10, num_classes=3, reduction_ratio=0.5)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {m.num_groups for m in convs} == {8}
    assert [s[-1][0].out_channels for s in net.stages] == [48, 64, 96, 128]
    # decoder: no normalisation or activation after the lateral/fuse convs
    assert all(isinstance(m, torch.nn.Conv2d) for m in [*net.laterals, *net.fuse])


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = create_model("freenet", in_bands=6, num_classes=4, reduction_ratio=0.25)
    net(torch.randn(1, 6, 32, 40)).logsumexp(1).mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_gs2_epoch_on_pavia_university_ground_truth(shared_data):
    """Real class distribution (Pavia U, 9 classes): 200 px/class, seed 2333 -> 10 disjoint minibatches of at
    most 20 px per class whose union is the training set."""
    from hsikit.io.matcubes import open_mat

    gt = open_mat(shared_data / "pavia_university_gt/PaviaU_gt.mat").read()[0].astype(np.int64)
    assert gt.shape == (610, 340) and gt.max() == 9
    sp = stratified_split(gt, train=200, seed=2333)
    assert sp.counts(gt)["train"] == {c: 200 for c in range(1, 10)}
    batches = gs2_minibatches(sp.train, gt, sub_minibatch=20, rng=np.random.default_rng(2333))
    assert len(batches) == 10
    flat = gt.ravel()
    for b in batches:
        assert np.bincount(flat[b], minlength=10)[1:].max() <= 20
        assert np.all(np.bincount(flat[b], minlength=10)[1:] == 20)
    allidx = np.concatenate(batches)
    assert allidx.size == np.unique(allidx).size == 1800
    assert set(allidx) == set(np.flatnonzero(sp.train.ravel()))
    # a new epoch draws other minibatches
    again = gs2_minibatches(sp.train, gt, sub_minibatch=20, rng=np.random.default_rng(1))
    assert not all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(batches, again))


def test_gs2_unbalanced_classes_drop_out_or_recycle():
    lab = np.zeros((20, 20), np.int64)
    lab[:10] = 1  # 200 px
    lab[10:, :3] = 2  # 30 px
    train = lab > 0
    b = gs2_minibatches(train, lab, sub_minibatch=20, rng=np.random.default_rng(0))
    per = [np.bincount(lab.ravel()[i], minlength=3)[1:] for i in b]
    assert len(b) == 10 and sum(p[1] > 0 for p in per) == 2  # class 2 only in two minibatches (20 + 10)
    r = gs2_minibatches(train, lab, sub_minibatch=20, rng=np.random.default_rng(0), recycle=True)
    assert all(np.bincount(lab.ravel()[i], minlength=3)[2] == 20 for i in r)


def test_test_pixels_never_reach_the_loss():
    """Changing the label of any pixel outside the current minibatch (test pixels included) leaves the loss
    unchanged; changing one inside it changes it."""
    rng = np.random.default_rng(0)
    lab = rng.integers(1, 4, (32, 32))
    sp = stratified_split(lab, train=30, seed=0)
    x = rng.normal(size=(5, 32, 32)).astype(np.float32)
    torch.manual_seed(0)
    net = create_model("freenet", in_bands=5, num_classes=3, reduction_ratio=0.25)
    data = GS2Data(x, lab, sp.train, seed=0)
    idx = next(iter(data.train_loader()))
    base = float(data.loss(net, idx).detach())
    lab2 = lab.copy()
    test_pixels = np.flatnonzero(sp.test.ravel())
    lab2.ravel()[test_pixels] = 1 + (lab2.ravel()[test_pixels] % 3)  # every test label changed
    other = GS2Data(x, lab2, sp.train, seed=0)
    assert float(other.loss(net, idx).detach()) == pytest.approx(base, abs=1e-7)
    lab3 = lab.copy()
    lab3.ravel()[int(idx[0])] = 1 + lab3.ravel()[int(idx[0])] % 3
    assert float(GS2Data(x, lab3, sp.train, seed=0).loss(net, idx)) != pytest.approx(base, abs=1e-6)


def test_recipe_is_the_papers():
    r = recipe_for("freenet")
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.schedule, r.poly_power) == (
        "sgd", 1e-3, 0.9, 1e-3, "poly", 0.9)
    assert (r.iterations, r.grad_clip, r.sub_minibatch, r.seed, r.train_pixels) == (1000, 35.0, 20, 2333, 200)
    assert not r.select_best  # the paper reports the last iteration, no model selection


def test_poly_schedule_and_gradient_clipping(tmp_path, monkeypatch):
    """lr at step i is 1e-3 (1 - i/1000)^0.9 and the gradient norm seen by the optimiser never exceeds 35."""
    from hsikit.training.module import fit
    from hsikit.training.run import Run, RunOptions

    seen: list[tuple[float, float]] = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            loss = closure() if closure is not None else None  # Lightning passes backward + clipping as closure
            g = torch.sqrt(sum((p.grad.detach() ** 2).sum() for grp in self.param_groups for p in grp["params"]
                               if p.grad is not None))
            seen.append((self.param_groups[0]["lr"], float(g)))
            super().step()
            return loss

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    rng = np.random.default_rng(0)
    lab = rng.integers(1, 4, (32, 32))
    sp = stratified_split(lab, train=40, seed=0)
    x = (rng.normal(size=(5, 32, 32)) * 1e4).astype(np.float32)  # huge inputs: huge gradients to clip
    run = Run.at(tmp_path, RunOptions(device="cpu", progress=False))
    torch.manual_seed(0)
    net = create_model("freenet", in_bands=5, num_classes=3, reduction_ratio=0.25)
    recipe = recipe_for("freenet").replace(iterations=1000)
    recipe.iterations = 6
    fit(net, GS2Data(x, lab, sp.train, seed=0), recipe, sp.val, run)
    assert len(seen) == 6
    for i, (lr, g) in enumerate(seen):
        assert lr == pytest.approx(1e-3 * (1 - i / 6) ** 0.9)  # the schedule spans the run's iterations
        assert g <= 35.0 + 1e-3


def test_tiled_inference_agrees_with_whole_image(tmp_path):
    """GroupNorm and spectral attention pool over the whole input, so tiles cannot match bit for bit; with
    the receptive-field halo a trained model's class maps agree on almost every pixel."""
    from hsikit.training.data import tiled_argmax
    from hsikit.training.module import fit
    from hsikit.training.run import Run, RunOptions

    run = Run.at(tmp_path, RunOptions(device="cpu", progress=False))  # seeds torch with 0
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # smooth land-cover regions: 4 classes with their own mean spectrum
    regions = rng.integers(1, 5, (4, 4))
    lab = np.kron(regions, np.ones((24, 24), np.int64))
    means = rng.normal(size=(5, 6))
    x = (means[lab].transpose(2, 0, 1) + 0.3 * rng.normal(size=(6, 96, 96))).astype(np.float32)
    sp = stratified_split(lab, train=40, seed=0)
    net = create_model("freenet", in_bands=6, num_classes=int(lab.max()), reduction_ratio=0.25)
    r = recipe_for("freenet")
    r.iterations, r.lr = 40, 0.05
    net, _, _ = fit(net, GS2Data(x, lab, sp.train, seed=0), r, sp.val, run)
    with torch.no_grad():
        whole = net(torch.from_numpy(x)[None])[0].argmax(0).numpy()
    assert (whole[sp.test] == lab[sp.test] - 1).mean() > 0.8  # it learned the regions
    ctx = get_entry("freenet").receptive_field(net.cfg)
    tiled = tiled_argmax(net, x, torch.device("cpu"), size_multiple=16, context=ctx, tile=64)
    assert tiled.shape == whole.shape
    assert (tiled == whole).mean() > 0.97


def test_same_seed_same_weights(tmp_path):
    from hsikit.training.module import fit
    from hsikit.training.run import Run, RunOptions

    rng = np.random.default_rng(0)
    lab = rng.integers(1, 4, (32, 32))
    sp = stratified_split(lab, train=20, seed=0)
    x = rng.normal(size=(5, 32, 32)).astype(np.float32)
    outs = []
    for i in range(2):
        run = Run.at(tmp_path / str(i), RunOptions(device="cpu", progress=False))
        torch.manual_seed(7)
        net = create_model("freenet", in_bands=5, num_classes=3, reduction_ratio=0.25)
        r = recipe_for("freenet")
        r.iterations = 3
        fit(net, GS2Data(x, lab, sp.train, seed=7), r, sp.val, run)
        outs.append(torch.cat([p.detach().ravel() for p in net.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_fixed_count_capped_on_indian_pines_small_classes(shared_data):
    """200 px/class on the real Indian Pines ground truth: the cap (half of a class) leaves test pixels in
    Alfalfa (46), Grass-pasture-mowed (28) and Oats (20); large classes get exactly 200."""
    import scipy.io

    gt = scipy.io.loadmat(shared_data / "indian_pines_gt/Indian_pines_gt.mat")["y"].astype(np.int64)
    r = recipe_for("freenet")
    sp = stratified_split(gt, train=r.train_pixels, seed=r.seed, max_train_fraction=r.max_train_fraction)
    c = sp.counts(gt)
    assert c["train"][1] == 23 and c["train"][7] == 14 and c["train"][9] == 10
    assert c["train"][2] == 200 and c["train"][11] == 200
    assert all(c["test"].get(k, 0) > 0 for k in range(1, 17))


def test_disjoint_split_keeps_test_windows_apart():
    from hsikit.pipelines.train_classifier import disjoint_split

    rng = np.random.default_rng(0)
    lab = rng.integers(1, 4, (60, 60))
    sp = disjoint_split(stratified_split(lab, train=0.02, val=0.02, seed=0), radius=2)
    tr = np.argwhere(sp.train)
    for mask in (sp.test, sp.val):
        te = np.argwhere(mask)
        assert te.size
        d = np.abs(te[:, None, :] - tr[None, :, :]).max(axis=2).min(axis=1)
        assert d.min() > 4  # 4x4/5x5 windows around test pixels share no pixel with a training window
