"""Tiles planned from a memory budget (hsikit.engine.budget) and the shared --threads option."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from hsikit.engine.budget import WORKSPACE_FACTOR, _peak, activation_probe, parse_size, plan_tile
from hsikit.engine.tiling import plan_axis
from hsikit.errors import OptionError
from tests.clirun import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "sample_data" / "sample_scene.tif"
SAMPLE_MODEL = ROOT / "sample_data" / "sample_model.safetensors"


@pytest.mark.parametrize("text,expected", [("8G", 8 << 30), ("1.5GiB", 3 << 29), ("512M", 512 << 20),
                                           ("512MB", 512 << 20), ("2t", 2 << 40), (" 100 m ", 100 << 20)])
def test_sizes_parse_in_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,why", [("8", "with a unit"), ("lots", "with a unit"), ("10M", "below 64 MiB"),
                                      ("-1G", "with a unit")])
def test_bad_sizes_are_refused_naming_the_option(text, why):
    with pytest.raises(OptionError, match=f"--max-memory.*{why}"):
        parse_size(text)


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(5, 16, 3, padding=1), nn.Conv2d(16, 3, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + 1.0)


def test_activation_probe_extrapolates_the_measured_peak():
    """The estimate at a large tile equals the peak measured there (times the workspace factor) for a network
    whose activations grow with the pixels; the tracker sees every live tensor, not only module outputs."""
    net = Conv()
    est = activation_probe(net, 5)
    for h, w in ((200, 120), (256, 256)):
        measured = _peak(net, 5, h, w)
        # input 5 + conv 16 + relu 16 + add 16 + output 3 channels, float32: at least the two 16-channel maps alive
        assert measured >= 2 * 16 * 4 * h * w
        assert est(h, w) == pytest.approx(measured * WORKSPACE_FACTOR, rel=0.02)


def need_of(th, tw, model, **kw):
    """plan_tile's own accounting, recovered by asking it for a budget just at and just below a tile's need."""
    lo, hi = 1, 1 << 40
    while lo < hi:
        mid = (lo + hi) // 2
        if plan_tile(th, tw, budget=mid, model=model, least=1, **kw) == (th, tw):
            hi = mid
        else:
            lo = mid + 1
    return lo


@pytest.mark.parametrize("h,w,overlap,multiple", [(1000, 700, 76, 1), (4096, 4096, 128, 16), (333, 5000, 0, 1)])
def test_planned_tiles_fit_the_budget_and_split_each_axis_evenly(h, w, overlap, multiple):
    model = activation_probe(Conv(), 5, multiple)
    kw = dict(model=model, in_bands=5, raw_itemsize=2, features=5, out_channels=3, overlap=lambda t: overlap,
              size_multiple=multiple)
    whole = need_of(h, w, **kw)
    assert plan_tile(h, w, budget=whole, **kw) == (h, w)
    budget = whole // 7
    th, tw = plan_tile(h, w, budget=budget, **kw)
    assert (th, tw) != (h, w) and need_of(th, tw, **kw) <= budget
    for length, size in ((h, th), (w, tw)):
        starts = plan_axis(length, size, overlap).starts
        n_needed = 1 if size >= length else math.ceil((length - overlap) / (size - overlap))
        assert len(starts) == n_needed  # no extra tile that mostly repeats its neighbour
        if len(starts) > 1:
            steps = np.diff(starts)
            assert steps.max() - steps.min() <= multiple + 1  # even split


def test_a_budget_too_small_for_the_model_is_refused():
    kw = dict(model=activation_probe(Conv(), 5), in_bands=5, raw_itemsize=2, features=5, out_channels=3,
              overlap=lambda t: 0)
    with pytest.raises(OptionError, match="--max-memory .* cannot hold even a 152-px tile"):
        plan_tile(5000, 5000, budget=1 << 20, least=152, **kw)


def test_classify_plans_its_tiles_from_the_budget(tmp_path):
    """No --tile: the whole sample scene in one tile with the default budget; a small budget gives several tiles
    and the tile plan is recorded in the tags."""
    from hsikit.pipelines.classify import classify

    out_dir = tmp_path

    whole = classify(SAMPLE_SCENE, model=SAMPLE_MODEL, out=out_dir / "whole.tif", progress=False)
    assert whole.tiles == 1 and whole.engine.tile == (200, 200)
    small = classify(SAMPLE_SCENE, model=SAMPLE_MODEL, out=out_dir / "small.tif", progress=False, max_memory="150M")
    th, tw = small.engine.tile
    assert small.tiles > 1 and th < 200 and tw < 200
    with rasterio.open(out_dir / "small.tif") as a, rasterio.open(out_dir / "whole.tif") as b:
        tag = json.loads(a.tags()["HSIKIT_TILE"])
        assert tag["tile"] == [th, tw] and tag["overlap"] == small.engine.overlap > 0
        # FreeNet normalises over its whole input, so tiles change a few pixels, not the map
        assert (a.read(1) == b.read(1)).mean() > 0.97


def test_pixel_local_maps_do_not_depend_on_the_budget(tmp_path):
    """A pixel-local model gives the same map in one tile, in the planned tiles and under a small budget."""
    from hsikit.pipelines.classify import classify
    from tests.test_batch import train_small_classifier
    from tests.fakedata import write_fake_geotiff

    model = train_small_classifier(tmp_path)
    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=12, height=600, width=520, seed=3)
    whole = classify(scene, model=model, out=tmp_path / "whole.tif", progress=False, tile=600)
    a = classify(scene, model=model, out=tmp_path / "a.tif", progress=False)
    b = classify(scene, model=model, out=tmp_path / "b.tif", progress=False, max_memory=16 << 20)
    # planned tiles of a pixel-local model stay moderate (the reader prepares one while the model runs)
    assert whole.tiles == 1 and a.tiles == 4 and max(a.engine.tile) <= 512
    assert b.tiles > a.tiles and a.engine.overlap == b.engine.overlap == 0
    with rasterio.open(tmp_path / "whole.tif") as w:
        ref = w.read(1)
    for name in ("a", "b"):
        with rasterio.open(tmp_path / f"{name}.tif") as x:
            assert np.array_equal(x.read(1), ref)


def test_cli_max_memory_and_threads(capsys, tmp_path):
    """--max-memory without a unit is a one-line usage error; --threads is applied to torch and recorded."""
    from hsikit.threads import current_threads, set_threads

    code, _, err = cli(capsys, "classify", SAMPLE_SCENE, "-o", tmp_path / "x.tif", "--max-memory", "8")
    assert code == 2 and "--max-memory" in err and "unit" in err and "Traceback" not in err
    code, _, err = cli(capsys, "classify", SAMPLE_SCENE, "-o", tmp_path / "x.tif", "--threads", "0")
    assert code == 2 and "--threads" in err
    before = current_threads()
    try:
        code, _, err = cli(capsys, "-q", "classify", SAMPLE_SCENE, "-m", SAMPLE_MODEL, "-o", tmp_path / "t.tif",
                           "--threads", "1")
        assert code == 0, err
        assert torch.get_num_threads() == 1
        with rasterio.open(tmp_path / "t.tif") as src:
            assert src.tags()["HSIKIT_THREADS"] == "1"
    finally:
        set_threads(before)
    code, out, _ = cli(capsys, "info", "--help")
    assert "--threads" not in out
    for cmd in (["classify"], ["denoise"], ["train", "classifier"], ["preprocess"], ["stress"]):
        code, out, _ = cli(capsys, *cmd, "--help")
        assert code == 0 and "--threads" in out, cmd
