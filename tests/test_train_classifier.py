"""Training workflow: falling loss, reports, checkpoints, on generated and real EnMAP data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from hsikit.checkpoint import load_checkpoint
from hsikit.errors import InputError
from hsikit.pipelines.train_classifier import train_classifier
from hsikit.training.run import RunOptions

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hsikit.synthetic import make_scene, write_labels, write_scene_geotiff

    d = tmp_path_factory.mktemp("train")
    s = make_scene(80, 90, seed=3)
    write_scene_geotiff(s, d / "scene.tif")
    write_labels(s, d / "labels.tif", d / "labels.gpkg")
    return d


def test_spectral_cnn_on_synthetic(sample, tmp_path):
    res = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "m.safetensors",
                           protocol="paper", train_pixels=30, val_pixels=15, epochs=40, patience=10, run=QUIET)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0]
    assert res.metrics["oa"] > 0.9
    report = json.loads((res.report_dir / "report.json").read_text())
    assert report["seed"] == 0 and report["metrics"]["oa"] == res.metrics["oa"]
    assert (res.report_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (res.report_dir / "confusion_matrix.csv").read_text().splitlines()
    assert len(rows) == 8 and "water" in rows[0]
    net, meta = load_checkpoint(res.checkpoint)
    assert meta.class_names[0] == "water" and meta.preprocessing["input_bands"]["count"] == 103
    assert meta.config["in_bands"] < 103, "bad bands were dropped before the model"


def test_vector_labels_and_unet(sample, tmp_path):
    res = train_classifier(sample / "scene.tif", sample / "labels.gpkg", out=tmp_path / "u.safetensors",
                           model="unet", model_config={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
                           protocol="paper", train=0.3, val=0.1, epochs=6, patience=6, tile=32, run=QUIET)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert res.metrics["oa"] > 0.5


def test_same_seed_same_model(sample, tmp_path):
    import torch

    kw = dict(protocol="paper", train_pixels=10, val_pixels=5, epochs=3, patience=3,
              run=RunOptions(progress=False, seed=4))
    a = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "a.safetensors", **kw)
    b = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "b.safetensors", **kw)
    ma, _ = load_checkpoint(a.checkpoint)
    mb, _ = load_checkpoint(b.checkpoint)
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_errors(sample, tmp_path):
    with rasterio.open(sample / "labels.tif") as src:
        prof = src.profile
    one = tmp_path / "one_class.tif"
    with rasterio.open(one, "w", **prof) as dst:
        dst.write(np.ones((1, prof["height"], prof["width"]), np.uint8))
    with pytest.raises(InputError, match="two classes"):
        train_classifier(sample / "scene.tif", one, out=tmp_path / "x.safetensors", run=QUIET)


@pytest.mark.slow
def test_real_enmap_tiles(shared_data, tmp_path):
    """Two real EnMAP L2A tiles side by side (a VRT mosaic), land-cover labels: loss falls, OA well above chance."""
    from rasterio.merge import merge

    img = shared_data / "enmap_potsdam/images"
    tiles = [img / t for t in ("enmap_potsdam_tile_128_96.tif", "enmap_potsdam_tile_160_96.tif",
                               "enmap_potsdam_tile_128_128.tif", "enmap_potsdam_tile_160_128.tif")]
    mosaic, transform = merge([str(t) for t in tiles])
    with rasterio.open(tiles[0]) as src:
        profile = src.profile | {"height": mosaic.shape[1], "width": mosaic.shape[2], "transform": transform}
        band_tags = [src.tags(i + 1) for i in range(src.count)]
        scales = src.scales
    with rasterio.open(tmp_path / "img.tif", "w", **profile) as dst:
        dst.write(mosaic)
        dst.scales = scales
        for i, t in enumerate(band_tags):
            dst.update_tags(i + 1, **t)
    res = train_classifier(tmp_path / "img.tif", shared_data / "enmap_potsdam/enmap_landcover_unstyled.tif",
                           out=tmp_path / "enmap.safetensors", protocol="paper", train=0.5, val=0.2, epochs=40,
                           patience=10, run=QUIET)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0]
    counts = np.array(res.metrics["support"], float)
    chance = (counts / counts.sum()).max()
    assert res.metrics["oa"] > chance + 0.1, (res.metrics["oa"], chance)


def test_mixed_precision_and_lightning_logs(sample, tmp_path):
    """bf16 autocast on CPU through Lightning's precision plugin; metrics.csv from its CSV logger."""
    res = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "m.safetensors",
                           protocol="paper", train_pixels=30, val_pixels=15, epochs=6, patience=10,
                           run=RunOptions(precision="bf16-mixed", progress=False))
    losses = [h["train_loss"] for h in res.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    rep = json.loads((res.report_dir / "report.json").read_text())
    assert rep["precision"] == "bf16-mixed" and rep["recipe"]["optimizer"] == "adam"
    assert "train_loss" in (res.report_dir / "metrics.csv").read_text().splitlines()[0]
    net, _ = load_checkpoint(res.checkpoint)
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in net.parameters())


def test_paper_recipe_defaults_and_overrides(sample, tmp_path):
    """MorpMamba's notebook recipe: 25 % train / 25 % validation under --protocol paper, 15 whitened PCA
    components in the stored chain; --epochs overrides the recipe's 50."""
    res = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "mm.safetensors",
                           model="morpmamba", recipe="notebook", protocol="paper", epochs=2, run=QUIET)
    rep = json.loads((res.report_dir / "report.json").read_text())
    assert rep["recipe"]["train"] == 0.25 and rep["recipe"]["val"] == 0.25 and len(res.history) == 2
    assert rep["recipe_name"] == "notebook"
    counts = rep["split"]["counts"]
    for c, n in counts["test"].items():
        total = n + counts["train"][c] + counts["val"][c]
        assert counts["train"][c] == round(0.25 * total) and counts["val"][c] == round(0.25 * total)
    _, meta = load_checkpoint(res.checkpoint)
    pca = [s for s in meta.preprocessing["steps"] if s["op"] == "pca"][0]
    assert pca["params"]["n_components"] == 15 and pca["params"]["whiten"] is True
    assert meta.config["in_bands"] == 15 and meta.config["patch"] == 4 and meta.config["kernel"] == 5
    assert meta.provenance["recipe"] == "notebook"


def test_the_default_recipe_sets_model_options_that_set_overrides(sample, tmp_path):
    """The default MorpMamba recipe's chain and model options reach the checkpoint; --set wins over them."""
    from hsikit.training.recipes import recipe_for

    default = recipe_for("morpmamba")
    assert default.model, "the default MorpMamba recipe sets model options"
    res = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "a.safetensors",
                           model="morpmamba", epochs=1, run=QUIET)
    _, meta = load_checkpoint(res.checkpoint)
    assert all(meta.config[k] == v for k, v in default.model.items()) and meta.provenance["recipe"] == "default"
    pca = [s for s in meta.preprocessing["steps"] if s["op"] == "pca"][0]
    assert pca["params"]["whiten"] is bool(default.chain.get("pca_whiten"))
    key = next(iter(default.model))
    other = default.model[key] + 2
    res = train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "b.safetensors",
                           model="morpmamba", model_config={key: other}, epochs=1, run=QUIET)
    assert load_checkpoint(res.checkpoint)[1].config[key] == other


def test_classifier_names_and_unknown_models(sample, tmp_path):
    """The trainable classifiers are listed; any other name is refused before anything is read or written."""
    from hsikit.errors import OptionError
    from hsikit.pipelines.train_classifier import classifier_names

    names = classifier_names()
    assert names == sorted(names)
    assert {"freenet", "morpmamba", "unet", "spectral-cnn", "svm", "random-forest"} <= set(names)
    assert "spectralgpt-segmenter" not in names and "hsdt" not in names
    for model, msg in [("no-such-net", r"^unknown classifier 'no-such-net'; choose one of: .*spectral-cnn"),
                       ("spectralgpt-segmenter", r"^unknown classifier 'spectralgpt-segmenter'; choose one of: "),
                       ("hsdt", r"^hsdt is a denoising model, not a classifier$")]:
        with pytest.raises(OptionError, match=msg):
            train_classifier(sample / "scene.tif", sample / "labels.tif", out=tmp_path / "x.safetensors",
                             model=model, run=QUIET)
    assert not any(tmp_path.iterdir())


def test_labelled_scene_takes_paths_or_a_dataset(tmp_path, monkeypatch):
    from hsikit.errors import OptionError
    from hsikit.pipelines.train_classifier import labelled_scene

    assert labelled_scene(tmp_path / "s.tif", tmp_path / "l.tif") == (str(tmp_path / "s.tif"), str(tmp_path / "l.tif"))

    class Loaded:
        scene = "the scene"

        def label_map(self):
            return "the label map"

    seen = []
    monkeypatch.setattr("hsikit.datasets.load", lambda name, data_dir: seen.append((name, data_dir)) or Loaded())
    assert labelled_scene(None, None, dataset="indian_pines", data_dir=tmp_path) == ("the scene", "the label map")
    assert seen == [("indian_pines", tmp_path)]
    with pytest.raises(OptionError, match=r"^give either SCENE --labels L or --dataset, not both$"):
        labelled_scene(tmp_path / "s.tif", None, dataset="indian_pines")
    for scene, labels in [(None, None), (tmp_path / "s.tif", None), (None, tmp_path / "l.tif")]:
        with pytest.raises(OptionError, match=r"^give SCENE and --labels, or --dataset$"):
            labelled_scene(scene, labels)
