"""``hsikit export``: ONNX files equal to the torch models in onnxruntime, preprocessing folded in, STAC MLM items
valid against the extension's schema, and ``hsikit classify --model x.onnx`` without torch."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'hsikit[onnx]')")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'hsikit[onnx]')")

import torch  # noqa: E402
from clirun import cli  # noqa: E402
from fakedata import fake_cube, write_fake_geotiff  # noqa: E402

from hsikit.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint  # noqa: E402
from hsikit.engine.onnx_predict import OnnxModel, OnnxPredictor  # noqa: E402
from hsikit.engine.torch_predict import TorchPredictor  # noqa: E402
from hsikit.errors import InputError, OptionError  # noqa: E402
from hsikit.export.fold import OffsetChain, fold_chain  # noqa: E402
from hsikit.export.onnx import TOLERANCE, metadata_props, read_exported  # noqa: E402
from hsikit.io.open import open_scene  # noqa: E402
from hsikit.models.registry import create_model, get_entry  # noqa: E402
from hsikit.pipelines.export import export_model  # noqa: E402
from hsikit.preprocess.chain import Chain  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "data" / "stac-mlm"
SAMPLE_SCENE = ROOT / "sample_data" / "sample_scene.tif"
SAMPLE_MODEL = ROOT / "sample_data" / "sample_model.safetensors"
CLASSES = ["water", "trees", "bare soil"]
COLORS = ["#1f5fbf", "#1b7a2f", "#a8743a"]

#: small configurations of the architectures the issue asks to round-trip (random weights)
CLASSIFIERS = {"freenet": {"reduction_ratio": 0.25}, "unet": {}, "spectral-cnn": {}}
RESTORERS = {"hsdt": {"in_bands": 8, "width": 8, "depth": 4}, "essaformer": {"in_bands": 6, "dim": 8, "scale": 2}}


def _jsonable(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _scene(tmp_path: Path) -> Path:
    """12 bands of int16 DN (reflectance x 10000) with a nodata border."""
    return write_fake_geotiff(tmp_path / "scene.tif", bands=12, height=40, width=50, dtype="int16", nodata=-9999,
                              nodata_border=3)


def _fitted_chain(scene: Path, pca: int | None = None) -> Chain:
    opts = dict(bands=list(range(10)), scale=1e-4, normalize=True, pca=pca)
    with open_scene(scene) as sc:
        return Chain.from_options(**opts).fit(sc)


def _classifier(tmp_path: Path, arch: str, scene: Path, pca: int | None = None) -> Path:
    """A random-weight classifier checkpoint with a preprocessing chain fitted on ``scene``."""
    chain = _fitted_chain(scene, pca)
    with open_scene(scene) as sc:
        n = chain.output_bands(sc.bands).count
        bands = sc.bands.to_dict()
    torch.manual_seed(0)
    cfg = get_entry(arch).config_cls(in_bands=n, num_classes=len(CLASSES), **CLASSIFIERS[arch])
    net = create_model(arch, **_jsonable(cfg))
    meta = CheckpointMeta(arch=arch, config=_jsonable(cfg), task="classification", bands=bands,
                          preprocessing=chain.to_dict(), class_names=CLASSES, class_colors=COLORS,
                          provenance={"command": "test", "created": "2026-01-01T00:00:00+00:00", "seed": 0})
    return save_checkpoint(tmp_path / f"{arch}.safetensors", net, meta)


def _restorer(tmp_path: Path, arch: str) -> Path:
    torch.manual_seed(0)
    entry = get_entry(arch)
    cfg = entry.config_cls(**RESTORERS[arch])
    net = create_model(arch, **_jsonable(cfg))
    meta = CheckpointMeta(arch=arch, config=_jsonable(cfg), task=entry.task,
                          restoration={"scaling": "minmax", "imported": False, "clamp_output": False})
    return save_checkpoint(tmp_path / f"{arch}.safetensors", net, meta)


# -- the folded preprocessing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pca", [None, 4], ids=["scale-normalize", "with-pca"])
def test_the_folded_chain_gives_the_checkpoints_features(tmp_path, pca):
    scene = _scene(tmp_path)
    chain = _fitted_chain(scene, pca)
    folding = fold_chain(chain.to_dict())
    assert folding.folded == ["scale", "normalize"] + (["pca"] if pca else [])
    assert folding.diagonal is (pca is None)
    outside = OffsetChain(Chain.from_dict(folding.outside), folding.offset)
    with open_scene(scene) as sc:
        raw = sc.read()
        valid = sc.read_valid(None, raw)
    assert not valid.all(), "the fake scene has a nodata border"
    # the engine zeroes invalid pixels' features after the chain: both paths must agree there too
    want = np.where(valid, chain.apply(raw, valid), 0.0)
    x = np.where(valid, outside.apply(raw, valid), 0.0)
    got = np.einsum("ij,jhw->ihw", folding.matrix, x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert outside.used_input_bands(12) == list(range(10))


def test_a_chain_fitted_on_each_scene_stays_outside():
    unfitted = Chain.from_options(normalize=True).to_dict()
    folding = fold_chain(unfitted)
    assert folding.offset is None and folding.matrix is None and folding.folded == []
    assert "each scene" in folding.reason
    assert folding.outside == Chain.from_dict(unfitted).to_dict()


# -- onnxruntime equals torch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(CLASSIFIERS))
def test_exported_classifiers_equal_torch(tmp_path, arch):
    scene = _scene(tmp_path)
    ckpt = _classifier(tmp_path, arch, scene)
    res = export_model(ckpt, out=tmp_path / f"{arch}.onnx")
    assert res.max_difference <= TOLERANCE and len(res.shapes) == 2 and res.shapes[0] != res.shapes[1]
    assert res.folded == ["scale", "normalize"]

    net, meta = load_checkpoint(ckpt)
    entry = get_entry(arch)
    context = entry.receptive_field(entry.config_cls(**meta.config))
    model = OnnxModel(res.onnx)
    assert model.meta.class_names == CLASSES and model.meta.class_colors == COLORS
    assert model.info.context == context and model.info.size_multiple == entry.size_multiple
    chain, folding = Chain.from_dict(meta.preprocessing), fold_chain(meta.preprocessing)
    outside = OffsetChain(Chain.from_dict(model.info.input_chain), model.info.offset)
    kw = dict(size_multiple=entry.size_multiple, pixel_local=context == 0)
    torch_predict = TorchPredictor(net, device="cpu", softmax=True, **kw)
    onnx_predict = OnnxPredictor(model, device="cpu", **kw)
    # realistic spectra (DN), two shapes that are not multiples of the model's size multiple, batch 1 and 2
    for seed, (n, h, w) in enumerate([(1, 37, 45), (2, 50, 29)]):
        raw = np.stack([fake_cube(12, h, w, seed=seed + i, dtype="int16") for i in range(n)])
        want = torch_predict(np.stack([chain.apply(r) for r in raw]))
        got = onnx_predict(np.stack([outside.apply(r) for r in raw]))
        assert got.shape == want.shape == (n, len(CLASSES), h, w)
        assert np.abs(got - want).max() <= TOLERANCE, arch
    assert np.allclose(np.asarray(model.info.offset), folding.offset)


@pytest.mark.parametrize("arch", list(RESTORERS))
def test_exported_restoration_networks_equal_torch(tmp_path, arch):
    ckpt = _restorer(tmp_path, arch)
    res = export_model(ckpt, out=tmp_path / f"{arch}.onnx")
    assert res.max_difference <= TOLERANCE and res.outputs == "values" and res.not_folded
    net, _ = load_checkpoint(ckpt)
    model = OnnxModel(res.onnx)
    m, s = model.info.size_multiple, model.info.out_scale
    assert s == (RESTORERS[arch].get("scale") or 1)
    kw = dict(size_multiple=m, out_scale=s)
    torch_predict = TorchPredictor(net, device="cpu", softmax=False, **kw)
    onnx_predict = OnnxPredictor(model, device="cpu", **kw)
    rng = np.random.default_rng(1)
    c = RESTORERS[arch]["in_bands"]
    for n, h, w in [(1, 21, 30), (2, 36, 17)]:
        x = rng.uniform(0, 1, (n, c, h, w)).astype(np.float32)
        want, got = torch_predict(x), onnx_predict(x)
        assert got.shape == want.shape == (n, c, h * s, w * s)
        assert np.abs(got - want).max() <= TOLERANCE * max(1.0, np.abs(want).max()), arch


@pytest.mark.parametrize("arch, config, why", [
    ("svm", {"in_bands": 6, "num_classes": 3}, r"operator aten::triu_indices has no ONNX mapping"),
    ("morpmamba", {"in_bands": 6, "num_classes": 3, "dim": 16, "state_dim": 16}, r"operator Unfold needs a fixed"),
    ("spectralgpt-tiny", {"img_size": 32}, r"masked-autoencoding model"),
])
def test_architectures_that_cannot_export_say_why_in_one_line(tmp_path, capsys, arch, config, why):
    entry = get_entry(arch)
    cfg = _jsonable(entry.config_cls(**config))
    classes = CLASSES if entry.task == "classification" else None
    ckpt = save_checkpoint(tmp_path / "m.safetensors", create_model(arch, **cfg),
                           CheckpointMeta(arch=arch, config=cfg, task=entry.task, class_names=classes))
    with pytest.raises(OptionError, match=why) as err:
        export_model(ckpt, out=tmp_path / "m.onnx", mlm=tmp_path / "m.json")
    assert "\n" not in str(err.value) and str(err.value).startswith(arch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"], "nothing written, no temporaries"
    code, out, err_text = cli(capsys, "export", ckpt, "-o", tmp_path / "m.onnx")
    assert code == 2 and err_text.startswith("error: ") and len(err_text.strip().splitlines()) == 1, err_text
    assert "Torch IR" not in out + err_text


# -- the STAC MLM item -----------------------------------------------------------------------------------------------
def _validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (test extra)")
    referencing = pytest.importorskip("referencing", reason="referencing is not installed (comes with jsonschema)")
    from referencing.jsonschema import DRAFT7

    uris = {"mlm-v1.3.0-schema.json": "https://stac-extensions.github.io/mlm/v1.3.0/schema.json",
            "classification-v1.1.0-schema.json": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
            "processing-v1.1.0-schema.json": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
            "../stac-schemas/raster-v1.1.0.json": "https://stac-extensions.github.io/raster/v1.1.0/schema.json"}
    registry = referencing.Registry()
    for name, uri in uris.items():
        doc = json.loads((SCHEMAS / name).read_text())
        registry = registry.with_resource(uri, referencing.Resource.from_contents(doc, default_specification=DRAFT7))
    schema = json.loads((SCHEMAS / "mlm-v1.3.0-schema.json").read_text())
    return jsonschema.Draft7Validator(schema, registry=registry)


def test_a_checkpoints_mlm_item_validates():
    """The item a batch catalogue links as its model: read from the checkpoint's header, valid MLM."""
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.export.mlm import checkpoint_mlm_item

    item = checkpoint_mlm_item(SAMPLE_MODEL)
    errors = [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(item)]
    assert not errors, errors[:3]
    meta, props = read_checkpoint_meta(SAMPLE_MODEL), item["properties"]
    assert props["mlm:framework"] == "PyTorch" and props["mlm:architecture"] == meta.arch == "freenet"
    assert [c["name"] for c in props["mlm:output"][0]["classification:classes"]] == list(meta.class_names)
    assert props["mlm:input"][0]["bands"] == list(meta.bands["names"])
    assert props["mlm:total_parameters"] > 100_000 and item["assets"]["model"]["href"] == str(SAMPLE_MODEL.resolve())


def test_the_mlm_item_validates_and_round_trips_through_pystac(tmp_path):
    scene = _scene(tmp_path)
    ckpt = _classifier(tmp_path, "freenet", scene)
    res = export_model(ckpt, out=tmp_path / "freenet.onnx", mlm=tmp_path / "freenet.json")
    item = json.loads(res.mlm.read_text())
    validator = _validator()
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(item)]
    assert not errors, errors[:3]
    # the validator is live: a wrong data type, a missing band reference, a bad colour are caught
    for path, value in ((("mlm:input", 0, "input", "data_type"), "float99"),
                        (("mlm:output", 0, "classification:classes", 0, "color_hint"), "#1f5fbf"),
                        (("mlm:framework",), "")):
        bad = json.loads(json.dumps(item))
        target = bad["properties"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert list(validator.iter_errors(bad)), path
    bad = json.loads(json.dumps(item))
    del bad["properties"]["bands"]
    assert list(validator.iter_errors(bad)), "bands named by mlm:input must be described"

    props = item["properties"]
    with open_scene(scene) as sc:
        names, wl = list(sc.bands.names[:10]), list(sc.bands.wavelengths[:10])
    inp = props["mlm:input"][0]
    assert inp["bands"] == names and inp["input"]["shape"] == [-1, 10, -1, -1]
    assert [b["eo:center_wavelength"] for b in props["bands"]] == pytest.approx([w / 1000 for w in wl])
    assert [v["value"] for v in inp["value_scaling"]] == pytest.approx(read_exported(res.onnx)[1].offset)
    out = props["mlm:output"][0]
    assert [c["name"] for c in out["classification:classes"]] == CLASSES
    assert [c["color_hint"] for c in out["classification:classes"]] == [c[1:].upper() for c in COLORS]
    assert props["hsikit:tiling"]["context"] == read_exported(res.onnx)[1].context
    assert props["hsikit:provenance"]["seed"] == 0 and props["hsikit:checkpoint"]["checkpoint"] == ckpt.name
    assert props["processing:software"]["hsikit"] and props["mlm:pretrained"] is False
    assert item["assets"]["model"]["href"] == "freenet.onnx"

    pystac = pytest.importorskip("pystac", reason="pystac is not installed")
    from pystac.extensions.mlm import MLMExtension

    st = pystac.Item.from_dict(item)
    mlm = MLMExtension.ext(st)
    assert mlm.mlm_name == props["mlm:name"] and mlm.framework == "ONNX"
    assert [b if isinstance(b, str) else b.name for b in mlm.input[0].bands] == names
    assert [c.name for c in mlm.output[0].classes] == CLASSES
    assert st.to_dict()["properties"] == props


# -- reading exported files ------------------------------------------------------------------------------------------
def test_metadata_is_read_without_loading_the_graph(tmp_path):
    scene = _scene(tmp_path)
    res = export_model(_classifier(tmp_path, "spectral-cnn", scene), out=tmp_path / "m.onnx")
    props = metadata_props(res.onnx)
    assert props == {p.key: p.value for p in onnx.load(str(res.onnx)).metadata_props}
    meta, info = read_exported(res.onnx)
    assert meta.arch == "spectral-cnn" and info.pixel_local and info.in_features == 10
    assert info.chain_ops == ["select_bands", "scale", "normalize", "fill_invalid"]

    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model at all\n" * 10)
    with pytest.raises(InputError, match="junk.onnx is not an ONNX model"):
        read_exported(junk)
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(plain))
    with pytest.raises(InputError, match="without hsikit metadata"):
        read_exported(plain)


def test_export_refuses_bad_output_names(tmp_path, capsys):
    ckpt = _classifier(tmp_path, "spectral-cnn", _scene(tmp_path))
    code, _, err = cli(capsys, "export", ckpt, "-o", tmp_path / "m.tif")
    assert code == 2 and "ends in '.tif'" in err and ".onnx" in err
    code, _, err = cli(capsys, "export", ckpt, "-o", tmp_path / "m.onnx", "--mlm", tmp_path / "m.xml")
    assert code == 2 and "--mlm" in err
    (tmp_path / "m.onnx").write_text("x")
    code, _, err = cli(capsys, "export", ckpt, "-o", tmp_path / "m.onnx")
    assert code == 2 and "--overwrite" in err and (tmp_path / "m.onnx").read_text() == "x"


# -- classify with an exported model ---------------------------------------------------------------------------------
_NO_TORCH = """
import sys
from hsikit.cli.main import run
code = run(sys.argv[1:])
print("torch loaded:", "torch" in sys.modules)
sys.exit(code)
"""


def _classify_without_torch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH, "classify", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def _read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="module")
def sample_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample_model.onnx"
    export_model(SAMPLE_MODEL, out=out)
    return out


def test_classify_with_the_exported_sample_model_equals_the_checkpoint_and_needs_no_torch(tmp_path, capsys,
                                                                                           sample_export):
    code, _, err = cli(capsys, "classify", SAMPLE_SCENE, "-m", SAMPLE_MODEL, "-o", tmp_path / "torch.tif",
                       "--probabilities")
    assert code == 0, err
    run = _classify_without_torch(SAMPLE_SCENE, "-m", sample_export, "-o", tmp_path / "onnx.tif", "--probabilities")
    assert run.returncode == 0, run.stderr
    assert "torch loaded: False" in run.stdout
    a, b = _read(tmp_path / "torch.tif"), _read(tmp_path / "onnx.tif")
    assert (a == 0).any() and np.array_equal(a, b), f"{int((a != b).sum())} pixels differ"
    pa, pb = _read(tmp_path / "torch_probabilities.tif"), _read(tmp_path / "onnx_probabilities.tif")
    assert np.nanmax(np.abs(pa - pb)) <= TOLERANCE
    assert (tmp_path / "onnx.qml").exists()
    import rasterio

    with rasterio.open(tmp_path / "onnx.tif") as src:
        assert "folded into sample_model.onnx" in src.tags()["HSIKIT_NORMALIZATION"]


def test_info_prints_the_card_of_an_exported_model(capsys, sample_export):
    code, out, err = cli(capsys, "info", sample_export)
    assert code == 0, err
    assert "architecture:  freenet (classification)" in out and "classes:       1=water" in out
    assert re.search(r"^exported: +ONNX opset 17 from sample_model\.safetensors; folded in: scale, normalize; "
                     r"max difference from torch [\d.e+-]+$", out, re.M), out
    code, out, _ = cli(capsys, "info", sample_export, "--json")
    card = json.loads(out)
    assert code == 0 and card["exported"]["checkpoint"] == "sample_model.safetensors" and card["arch"] == "freenet"


def test_preprocessing_fitted_on_each_scene_runs_before_the_exported_network(tmp_path, capsys):
    """Imported weights normalise each scene with its own statistics: nothing folds, the chain travels in the
    metadata (and the MLM item) and classify fits it on the scene, as for the checkpoint."""
    scene = _scene(tmp_path)
    chain = Chain.from_options(scale=1e-4, normalize=True)  # unfitted
    torch.manual_seed(0)
    cfg = _jsonable(get_entry("spectral-cnn").config_cls(in_bands=12, num_classes=3))
    meta = CheckpointMeta(arch="spectral-cnn", config=cfg, task="classification", preprocessing=chain.to_dict(),
                          class_names=CLASSES, class_colors=COLORS)
    ckpt = save_checkpoint(tmp_path / "imported.safetensors", create_model("spectral-cnn", **cfg), meta)
    res = export_model(ckpt, out=tmp_path / "imported.onnx", mlm=tmp_path / "imported.json")
    assert res.folded == [] and "each scene" in res.not_folded
    info = read_exported(res.onnx)[1]
    assert info.offset is None and info.input_chain == chain.to_dict()
    item = json.loads(res.mlm.read_text())
    inp = item["properties"]["mlm:input"][0]
    assert inp["value_scaling"] is None and inp["pre_processing_function"]["format"] == "hsikit-chain"
    assert not list(_validator().iter_errors(item))
    for model, name in ((ckpt, "torch"), (res.onnx, "onnx")):
        code, _, err = cli(capsys, "classify", scene, "-m", model, "-o", tmp_path / f"{name}.tif", "--probabilities")
        assert code == 0, err
    assert np.array_equal(_read(tmp_path / "torch.tif"), _read(tmp_path / "onnx.tif"))
    pa, pb = _read(tmp_path / "torch_probabilities.tif"), _read(tmp_path / "onnx_probabilities.tif")
    assert np.nanmax(np.abs(pa - pb)) <= TOLERANCE


def test_classify_refuses_an_onnx_file_hsikit_did_not_export(tmp_path, capsys):
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(plain))
    code, _, err = cli(capsys, "classify", SAMPLE_SCENE, "-m", plain, "-o", tmp_path / "c.tif")
    assert code == 2 and "without hsikit metadata" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.tif").exists()


# -- a real scene ----------------------------------------------------------------------------------------------------
def test_exported_model_equals_torch_on_a_real_enmap_tile(tmp_path, capsys, shared_data):
    tile = shared_data / "enmap_potsdam" / "images" / "enmap_potsdam_tile_128_0.tif"
    if not tile.exists():
        pytest.skip(f"{tile} not found in the shared data")
    with open_scene(tile) as sc:
        chain = Chain.from_options(drop_bad_bands=True, normalize=True).fit(sc)
        n, bands = chain.output_bands(sc.bands).count, sc.bands.to_dict()
    torch.manual_seed(0)
    cfg = _jsonable(get_entry("freenet").config_cls(in_bands=n, num_classes=3, reduction_ratio=0.25))
    meta = CheckpointMeta(arch="freenet", config=cfg, task="classification", bands=bands,
                          preprocessing=chain.to_dict(), class_names=CLASSES, class_colors=COLORS)
    ckpt = save_checkpoint(tmp_path / "enmap.safetensors", create_model("freenet", **cfg), meta)
    res = export_model(ckpt, out=tmp_path / "enmap.onnx")
    assert res.folded == ["scale", "normalize"]
    code, _, err = cli(capsys, "classify", tile, "-m", ckpt, "-o", tmp_path / "torch.tif", "--probabilities")
    assert code == 0, err
    code, _, err = cli(capsys, "classify", tile, "-m", res.onnx, "-o", tmp_path / "onnx.tif", "--probabilities")
    assert code == 0, err
    assert np.array_equal(_read(tmp_path / "torch.tif"), _read(tmp_path / "onnx.tif"))
    pa, pb = _read(tmp_path / "torch_probabilities.tif"), _read(tmp_path / "onnx_probabilities.tif")
    assert np.nanmax(np.abs(pa - pb)) <= TOLERANCE
