"""The STAC catalogue of batch outputs (OUTDIR/catalog.json): it opens and validates with pystac (and
stac-validator) offline against the extension schemas in tests/data/stac-schemas, describes every done scene with
the projection, raster, eo and classification extensions, links sources and models, survives moving the folder
and is brought up to date by re-runs without rewriting what did not change."""

from __future__ import annotations

import json
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from clirun import cli
from fakedata import fake_wavelengths, write_fake_geotiff, write_labels_for
from hsikit.cli.main import run

distributed = pytest.importorskip("distributed")
pystac = pytest.importorskip("pystac")
pytest.importorskip("jsonschema", reason="jsonschema validates STAC offline: pip install jsonschema")

SCHEMAS = Path(__file__).resolve().parent / "data" / "stac-schemas"
OPTIONS = {"tile": 32, "probabilities": "uint8", "quicklook": True}
#: a projection without an authority code (the item then gives proj:wkt2)
CUSTOM_CRS = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=14.3 +k=0.9999 +x_0=500000 +y_0=0 +datum=WGS84 +units=m")
#: the users' own class names (not identifiers: the catalogue keeps them as titles) and colours
LEGEND = [{"value": 1, "name": "bare soil", "color": "#a0522d"}, {"value": 2, "name": "Wheat (winter)",
          "color": "#f5deb3"}, {"value": 3, "name": "water", "color": "#1e90ff"},
          {"value": 4, "name": "forest/woods", "color": "#228b22"}]


# -- offline validation ----------------------------------------------------------------------------------------------
def offline_validator():
    """pystac's JSON-schema validator with the STAC core schemas pystac ships and the extension schemas in
    tests/data/stac-schemas (see its README): nothing is fetched, a schema not there fails the validation."""
    from pystac.validation import JsonSchemaSTACValidator

    from hsikit.pipelines.batch_stac import EXTENSIONS

    v = JsonSchemaSTACValidator()
    for f in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(f.read_text())
        v.schema_cache[schema["$id"].rstrip("#")] = schema
    assert set(EXTENSIONS) <= set(v.schema_cache), "an extension the catalogue uses has no local schema"
    return v


@contextmanager
def validating():
    from pystac.validation import RegisteredValidator, set_validator

    before = RegisteredValidator.get_validator()
    set_validator(offline_validator())
    try:
        yield
    finally:
        set_validator(before)


def schema_map() -> dict[str, str]:
    """URL -> local file of every schema the catalogue needs, for stac-validator's schema map."""
    import importlib.resources

    from pystac.validation.local_validator import get_local_schema_cache

    base = Path(str(importlib.resources.files("pystac.validation.jsonschemas")))
    out = {}
    for url in get_local_schema_cache():
        folder = "geojson" if "geojson.org" in url else "stac-spec/v1.1.0"
        out[url] = str(base / folder / url.rsplit("/", 1)[1])
    for f in SCHEMAS.glob("*.json"):
        out[json.loads(f.read_text())["$id"].rstrip("#")] = str(f)
    assert all(Path(p).exists() for p in out.values())
    return out


def open_catalogue(out: Path):
    """(catalogue, {collection id: {item id: item}}) after validating every object offline."""
    with validating():
        cat = pystac.Catalog.from_file(str(out / "catalog.json"))
        n = cat.validate_all()
    items = {c.id: {it.id: it for it in c.get_items()} for c in cat.get_children()}
    assert n == len(list(cat.get_items())) + sum(len(v) for v in items.values())  # every item was validated
    return cat, items


# -- a batch run shared by the tests ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                 silence_logs=50)
    yield c
    c.close()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, cluster):
    """A classifier, three scenes (one without a CRS, one kept for the re-run) and a batch over the first two,
    run while hsikit.export.mlm is unavailable (each item then links the checkpoint as an asset)."""
    from hsikit.pipelines import batch_stac
    from hsikit.pipelines.batch import run_batch

    d = tmp_path_factory.mktemp("stac")
    scene = write_fake_geotiff(d / "train.tif", bands=12, height=60, width=70)
    model = d / "model.safetensors"
    assert run(["-q", "train", "classifier", str(scene), "--labels", str(write_labels_for(scene, d / "lab.tif")),
                "-o", str(model), "--epochs", "2", "--seed", "0"]) == 0
    src = d / "scenes"
    src.mkdir()
    a = write_fake_geotiff(src / "a.tif", bands=12, height=30, width=40, seed=1, nodata_border=2)
    loose = write_fake_geotiff(src / "loose.tif", bands=12, height=20, width=24, seed=2, crs=None)
    b = write_fake_geotiff(src / "b.tif", bands=12, height=26, width=33, seed=3, crs=CUSTOM_CRS)
    legend = d / "legend.json"
    legend.write_text(json.dumps(LEGEND))
    out = d / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_stac, "_mlm_builder", lambda: None)
        res = run_batch("classify", [a, loose], outdir=out, model=model, options={**OPTIONS, "legend": legend},
                        allow_no_crs=True, scheduler=cluster.scheduler_address, progress=False)
    assert (res.done, res.failed) == (2, 0), res.failures
    return {"out": out, "model": model, "a": a, "loose": loose, "b": b, "legend": legend, "result": res}


def copy_out(first_run, dest: Path) -> Path:
    shutil.copytree(first_run["out"], dest)
    return dest


# -- the catalogue -----------------------------------------------------------------------------------------------------
def test_catalogue_validates_and_describes_the_outputs(first_run):
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from pystac.errors import STACValidationError
    from pystac.validation import validate_dict
    from rasterio.warp import transform_bounds

    out, res = first_run["out"], first_run["result"]
    assert res.catalog == out / "catalog.json" and res.catalog.exists()
    cat, items = open_catalogue(out)
    assert list(items) == ["classify"] and sorted(items["classify"]) == ["a", "loose"]
    item = items["classify"]["a"]
    assert set(item.assets) == {"class_map", "qml", "probabilities", "quicklook", "model"}
    for key, asset in item.assets.items():  # every href resolves to the file it describes
        assert Path(asset.get_absolute_href()).exists(), key
        if key != "model":
            assert not Path(asset.href).is_absolute() and Path(asset.get_absolute_href()).parent == out

    # projection: the class map's grid, and a footprint equal to its bounds in WGS 84
    with rasterio.open(out / "a.tif") as ds:
        crs, transform, shape, bounds = ds.crs, ds.transform, (ds.height, ds.width), ds.bounds
    proj = ProjectionExtension.ext(item)
    assert proj.code == "EPSG:32633" and proj.bbox == list(bounds)
    cm = item.assets["class_map"]
    assert ProjectionExtension.ext(cm).shape == list(shape)
    assert ProjectionExtension.ext(cm).transform == list(transform)[:6]
    np.testing.assert_allclose(item.bbox, transform_bounds(crs, "EPSG:4326", *bounds), atol=1e-7)

    # raster: data types and nodata of each output, as their headers say
    band = RasterExtension.ext(cm).bands[0]
    assert (band.data_type, band.nodata, band.spatial_resolution) == ("uint8", 0, 30)
    probs = RasterExtension.ext(item.assets["probabilities"]).bands
    assert len(probs) == 4 and {(b.data_type, b.nodata) for b in probs} == {("uint8", 255)}
    assert probs[0].scale == pytest.approx(1 / 254)

    # classification: the legend's values, names (as titles; names are identifiers) and colours; 0 is nodata
    classes = ClassificationExtension.ext(cm).classes
    assert [(c.value, c.nodata) for c in classes][:1] == [(0, True)]
    assert [(c.value, c.properties["title"], "#" + c.color_hint.lower()) for c in classes[1:]] == [
        (e["value"], e["name"], e["color"]) for e in LEGEND]
    assert [c.name for c in classes] == ["no_data", "bare_soil", "Wheat_winter", "water", "forest_woods"]

    # links: the source scene and (no MLM export here) the checkpoint as an asset
    derived = [ln for ln in item.links if ln.rel == "derived_from"]
    assert [ln.href for ln in derived] == [str(first_run["a"].resolve())]
    assert item.assets["model"].href == str(first_run["model"].resolve())
    assert item.collection_id == "classify" and item.get_root().id == cat.id
    assert item.datetime is not None

    # the validation is not vacuous: what the extensions forbid (a class name with a space) is refused
    d = json.loads((out / "stac" / "classify" / "items" / "a.json").read_text())
    d["assets"]["class_map"]["classification:classes"][1]["name"] = "bare soil"
    with pytest.raises(STACValidationError, match="classification"):
        validate_dict(d, validator=offline_validator())

    # a scene processed without a CRS: no footprint, proj:code null
    loose = items["classify"]["loose"]
    assert loose.geometry is None and loose.bbox is None and ProjectionExtension.ext(loose).code is None


def test_items_record_the_model_and_the_creation_time_from_the_headers(first_run):
    from hsikit.checkpoint import checkpoint_sha256

    out = first_run["out"]
    d = json.loads((out / "stac" / "classify" / "items" / "a.json").read_text())
    with rasterio.open(out / "a.tif") as ds:
        tags = ds.tags()
    assert d["properties"]["hsikit:checkpoint_sha256"] == checkpoint_sha256(first_run["model"])
    assert d["properties"]["hsikit:batch_key"] == tags["HSIKIT_BATCH_KEY"]
    assert d["properties"]["datetime"] == tags["HSIKIT_CREATED"].replace("+00:00", "Z")


def test_stac_validator_accepts_the_catalogue_offline(first_run):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the package's rename to stac_valid
            from stac_validator.validate import StacValidate
    except ImportError:
        print("stac-validator is not installed: pip install stac-validator")  # noqa: T201 - the skip's reason
        pytest.skip("stac-validator is not installed")
    v = StacValidate(str(first_run["out"] / "catalog.json"), recursive=True, schema_map=schema_map())
    assert v.run(), json.dumps(v.message, indent=1)[:3000]
    assert sum(1 for m in v.message if m.get("valid_stac")) == 4  # catalogue, collection, two items
    assert all(m["valid_stac"] for m in v.message)


def test_moved_folder_and_rerun_with_one_more_scene(first_run, cluster, tmp_path, capsys, monkeypatch):
    """The folder can be moved (hrefs inside it are relative); a re-run through the CLI with one more scene adds
    its item, leaves the first item's file untouched and keeps the catalogue valid."""
    from pystac.extensions.projection import ProjectionExtension
    from rasterio.warp import transform_bounds

    from hsikit.pipelines import batch_stac

    monkeypatch.setattr(batch_stac, "_mlm_builder", lambda: None)  # as in the first run
    out = copy_out(first_run, tmp_path / "moved")
    _, items = open_catalogue(out)
    assert Path(items["classify"]["a"].assets["class_map"].get_absolute_href()) == out / "a.tif"
    item_a = out / "stac" / "classify" / "items" / "a.json"
    before = (item_a.read_bytes(), item_a.stat().st_mtime_ns)

    code, stdout, err = cli(capsys, "batch", "classify", first_run["a"], first_run["loose"], first_run["b"], "-o",
                            out, "-m", first_run["model"], "--scheduler", cluster.scheduler_address, "--tile", "32",
                            "--probabilities", "uint8", "--quicklook", "--legend", first_run["legend"],
                            "--allow-no-crs", "--no-dashboard")
    assert code == 0, err
    assert "2 skipped" in stdout
    _, items = open_catalogue(out)
    assert sorted(items["classify"]) == ["a", "b", "loose"]
    assert (item_a.read_bytes(), item_a.stat().st_mtime_ns) == before
    b = items["classify"]["b"]
    assert Path(b.assets["class_map"].get_absolute_href()) == out / "b.tif"
    proj = ProjectionExtension.ext(b)  # no EPSG code: the CRS as WKT2, and still a WGS 84 footprint
    assert proj.code is None and CRS.from_wkt(proj.wkt2) == CUSTOM_CRS
    with rasterio.open(out / "b.tif") as ds:
        np.testing.assert_allclose(b.bbox, transform_bounds(ds.crs, "EPSG:4326", *ds.bounds), atol=1e-7)
    coll = json.loads((out / "stac" / "classify" / "collection.json").read_text())
    assert sorted(ln["href"] for ln in coll["links"] if ln["rel"] == "item") == [
        "./items/a.json", "./items/b.json", "./items/loose.json"]


def test_same_catalogue_again_and_scenes_that_lost_their_outputs(first_run, tmp_path, monkeypatch):
    """Rebuilding from the manifest gives the same files (nothing is rewritten); a done scene whose output was
    deleted since is left out with its reason, and its item file removed."""
    from hsikit.pipelines import batch_stac

    monkeypatch.setattr(batch_stac, "_mlm_builder", lambda: None)  # as in the first run
    out = copy_out(first_run, tmp_path / "again")
    files = {p: p.read_bytes() for p in out.rglob("*.json") if ".hsikit-batch" not in p.parts}
    res = batch_stac.write_batch_catalog(out)
    assert (res.written, res.removed, res.items) == (0, 0, 2)
    assert {p: p.read_bytes() for p in files} == files

    (out / "loose.tif").unlink()
    res = batch_stac.write_batch_catalog(out)
    assert res.items == 1 and res.removed == 1 and res.skipped == [("loose", "output loose.tif is missing")]
    assert not (out / "stac" / "classify" / "items" / "loose.json").exists()
    _, items = open_catalogue(out)
    assert sorted(items["classify"]) == ["a"]

    (out / "a.tif").unlink()
    res = batch_stac.write_batch_catalog(out)
    assert res.items == 0 and not (out / "stac").exists()
    assert [ln["rel"] for ln in json.loads((out / "catalog.json").read_text())["links"]] == ["root"]


def test_model_item_from_the_mlm_export(first_run, tmp_path, monkeypatch):
    """With an MLM export available, OUTDIR/model.json is the model's item (in the root catalogue, with the
    checkpoint as an asset) and every scene item links it with rel derived_from and its mlm:name."""
    from hsikit.pipelines import batch_stac

    calls = []

    def fake_mlm_item(checkpoint: Path) -> dict:
        calls.append(checkpoint)
        return {"type": "Feature", "stac_version": "1.1.0", "stac_extensions": [], "id": "small-cnn",
                "geometry": None, "properties": {"datetime": "2024-01-01T00:00:00Z", "mlm:name": "small-cnn"},
                "links": [{"rel": "self", "href": "/elsewhere/small-cnn.json"}], "assets": {}}

    monkeypatch.setattr(batch_stac, "_mlm_builder", lambda: fake_mlm_item)
    out = copy_out(first_run, tmp_path / "with_mlm")
    res = batch_stac.write_batch_catalog(out)
    assert calls == [first_run["model"].resolve()] and res.model_items == [out / "model.json"]
    cat, items = open_catalogue(out)
    model = next(cat.get_items("small-cnn"), None)
    assert model is not None and Path(model.assets["checkpoint"].get_absolute_href()) == first_run["model"].resolve()
    for item in items["classify"].values():
        assert "model" not in item.assets
        link = [ln for ln in item.links if ln.rel == "derived_from" and ln.media_type == "application/geo+json"]
        assert len(link) == 1 and Path(link[0].get_absolute_href()) == out / "model.json"
        assert link[0].extra_fields["mlm:name"] == "small-cnn"

    # the export gone again: the model.json written before stays the model's item
    monkeypatch.setattr(batch_stac, "_mlm_builder", lambda: None)
    res = batch_stac.write_batch_catalog(out)
    assert res.model_items == [out / "model.json"] and res.written == 0


def test_a_failing_mlm_export_leaves_the_checkpoint_linked(first_run, tmp_path, monkeypatch):
    from hsikit.errors import OptionError
    from hsikit.pipelines import batch_stac

    def refuse(checkpoint: Path) -> dict:
        raise OptionError("spectral-cnn cannot be described")

    monkeypatch.setattr(batch_stac, "_mlm_builder", lambda: refuse)
    out = copy_out(first_run, tmp_path / "mlm_fails")
    res = batch_stac.write_batch_catalog(out)
    assert res.notes == ["no model item for model.safetensors: spectral-cnn cannot be described"]
    assert res.model_items == [] and not (out / "model.json").exists()
    _, items = open_catalogue(out)
    assert {Path(it.assets["model"].href) for it in items["classify"].values()} == {first_run["model"].resolve()}


def test_the_real_mlm_export_is_linked(first_run, tmp_path):
    """hsikit.export.mlm, where installed, provides the model item the catalogue links (its own extensions are
    validated by its tests; here the STAC core)."""
    mlm = pytest.importorskip("hsikit.export.mlm", reason="hsikit.export.mlm is not installed in this tree")
    from pystac.validation import validate_dict

    from hsikit.pipelines import batch_stac

    if not callable(getattr(mlm, batch_stac.MLM_FUNCTION, None)):
        why = f"hsikit.export.mlm has no {batch_stac.MLM_FUNCTION}(checkpoint) yet: items link the checkpoint"
        print(why)  # noqa: T201 - the skip's reason
        pytest.skip(why)
    out = copy_out(first_run, tmp_path / "real_mlm")
    res = batch_stac.write_batch_catalog(out)
    assert res.model_items == [out / "model.json"], res.notes
    d = json.loads((out / "model.json").read_text())
    validate_dict(d, extensions=[], validator=offline_validator())
    item = json.loads((out / "stac" / "classify" / "items" / "a.json").read_text())
    links = [ln for ln in item["links"] if ln["rel"] == "derived_from" and ln.get("type") == "application/geo+json"]
    assert [ln["href"] for ln in links] == ["../../../model.json"] and "model" not in item["assets"]


def test_preprocessed_cubes_carry_their_wavelengths(tmp_path, cluster):
    """A task without a model (preprocess): eo:bands give each band's centre wavelength and FWHM in micrometres,
    raster:bands its float32 type; no model link or asset."""
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.raster import RasterExtension

    from hsikit.pipelines.batch import run_batch

    scene = write_fake_geotiff(tmp_path / "cube.tif", bands=6, height=24, width=20, seed=4)
    res = run_batch("preprocess", [scene], outdir=tmp_path / "pre", options={"normalize": True},
                    scheduler=cluster.scheduler_address, progress=False)
    assert res.done == 1 and res.catalog is not None
    _, items = open_catalogue(tmp_path / "pre")
    item = items["preprocess"]["cube"]
    asset = item.assets["output"]
    bands = EOExtension.ext(asset).bands
    np.testing.assert_allclose([b.center_wavelength for b in bands], fake_wavelengths(6) / 1000, rtol=1e-9)
    assert {b.full_width_half_max for b in bands} == {0.01}
    assert {b.data_type for b in RasterExtension.ext(asset).bands} == {"float32"}
    assert "model" not in item.assets and [ln.rel for ln in item.links if ln.rel == "derived_from"] == [
        "derived_from"]


def test_catalogue_from_the_manifest_and_headers_alone(tmp_path):
    """Any task's rows: outputs without hsikit's tags (here as the stress task writes them, plus a PNG and a JSON
    beside the map) become assets named by their suffix; the item's time is when the manifest recorded the scene
    done; a failed scene has no item."""
    import datetime as dt

    from hsikit.pipelines.batch_stac import write_batch_catalog
    from hsikit.pipelines.manifest import Manifest

    out = tmp_path / "out"
    out.mkdir()
    files = [write_fake_geotiff(out / "series.tif", bands=1, dtype="uint8", nodata=0, wavelengths=False),
             write_fake_geotiff(out / "series_lengths.tif", bands=1, dtype="int16", nodata=-1, wavelengths=False),
             out / "series.png", out / "series_explanation.json"]
    files[2].write_bytes(b"\x89PNG\r\n\x1a\n")
    files[3].write_text("{}")
    with Manifest(out) as man:
        man.start_run(command=None, task="stress", cluster="test")
        for key, name in (("k1", "series"), ("k2", "broken")):
            man.upsert(key=key, name=name, href=f"/data/{name}", task="stress", options={}, fingerprint=None,
                       outputs=[str(f) for f in files] if name == "series" else [str(out / "broken.tif")])
        man.done("k1", outputs=[str(f) for f in files], pixels=1, seconds=1.0, timings=None, worker=None)
        man.failed("k2", "no valid date")
        finished = man.get("k1").finished
    res = write_batch_catalog(out)
    assert (res.items, res.skipped, res.collections) == (1, [], ["stress"])
    _, items = open_catalogue(out)
    item = items["stress"]["series"]
    assert set(item.assets) == {"output", "lengths", "output_png", "explanation"}
    assert item.assets["output_png"].media_type == "image/png" and item.assets["output_png"].roles == ["metadata"]
    assert item.assets["lengths"].extra_fields["raster:bands"] == [
        {"data_type": "int16", "nodata": -1, "spatial_resolution": 30}]
    assert item.datetime == dt.datetime.fromtimestamp(int(finished), dt.timezone.utc)
    assert [ln.href for ln in item.links if ln.rel == "derived_from"] == ["/data/series"]
