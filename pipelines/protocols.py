"""Evaluation protocols on real data: scene + labels + split files built from a dataset's published layout."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsikit.errors import InputError

#: EnMAP-Box SpecDeepMap test data: 18 EnMAP L2A tiles (32×32×224) of the Potsdam scene with land-cover labels
#: (EnMAP-Box level-3 scheme, names inferred from its palette) and train/validation/test tile lists.
POTSDAM_CLASSES = ["roof", "pavement", "low vegetation", "tree", "soil", "water"]
POTSDAM_COLORS = ["#e60000", "#9c9c9c", "#98e600", "#267300", "#a87000", "#0070ff"]


@dataclass
class ProtocolFiles:
    scene: Path
    labels: Path
    split: Path  # uint8 raster on the scene grid: 1 train, 2 validation, 3 test, 0 unused

    def split_array(self) -> np.ndarray:
        import rasterio

        with rasterio.open(self.split) as src:
            return src.read(1)


def enmap_potsdam(data_dir: str | Path, workdir: str | Path) -> ProtocolFiles:
    """Mosaic the Potsdam tiles onto one grid (the bounding box of all 18 tiles, nodata elsewhere) with their
    labels and a split raster from the published train/validation/test tile lists. Files are written once into
    ``workdir`` and reused."""
    import rasterio
    from rasterio.merge import merge

    from hsikit.io.legend import hex_to_rgb

    root = Path(data_dir)
    lists = {name: root / f"{name}_files.csv" for name in ("train", "validation", "test")}
    if not all(p.exists() for p in lists.values()):
        raise InputError(f"{root} is not the EnMAP Potsdam folder (train/validation/test_files.csv missing)")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    files = ProtocolFiles(work / "potsdam_scene.tif", work / "potsdam_labels.tif", work / "potsdam_split.tif")
    if all(p.exists() for p in (files.scene, files.labels, files.split)):
        return files
    rows: dict[str, list[tuple[Path, Path]]] = {}
    for name, p in lists.items():
        with open(p, newline="") as f:
            rows[name] = [(root / r["image"], root / r["mask"]) for r in csv.DictReader(f)]
    images = [im for v in rows.values() for im, _ in v]
    mosaic, transform = merge([str(p) for p in images])
    with rasterio.open(images[0]) as src:
        profile = src.profile | {"height": mosaic.shape[1], "width": mosaic.shape[2], "transform": transform,
                                 "tiled": True, "blockxsize": 64, "blockysize": 64, "interleave": "pixel"}
        band_tags = [src.tags(i + 1) for i in range(src.count)]
        tags = src.tags()
        descriptions = src.descriptions
    with rasterio.open(files.scene, "w", **profile) as dst:
        dst.write(mosaic)
        dst.update_tags(**tags)
        for i, t in enumerate(band_tags):
            dst.update_tags(i + 1, **t)
            if descriptions[i]:
                dst.set_band_description(i + 1, descriptions[i])
    h, w = mosaic.shape[1:]
    lab = np.zeros((h, w), np.uint8)
    split = np.zeros((h, w), np.uint8)
    inv = ~transform
    for code, name in ((1, "train"), (2, "validation"), (3, "test")):
        for _, mask in rows[name]:
            with rasterio.open(mask) as src:
                c0, r0 = (int(round(v)) for v in inv * (src.transform.c, src.transform.f))
                m = np.nan_to_num(src.read(1)).astype(np.uint8)
                lab[r0 : r0 + src.height, c0 : c0 + src.width] = m
                split[r0 : r0 + src.height, c0 : c0 + src.width] = np.where(m > 0, code, 0)
    grid = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8", "crs": profile["crs"],
            "transform": transform, "nodata": 0, "compress": "deflate"}
    with rasterio.open(files.labels, "w", **grid) as dst:
        dst.write(lab, 1)
        dst.update_tags(HSIKIT_CLASS_NAMES=json.dumps(POTSDAM_CLASSES), HSIKIT_CLASS_COLORS=json.dumps(POTSDAM_COLORS))
        dst.write_colormap(1, {0: (0, 0, 0, 0), **{i + 1: (*hex_to_rgb(c), 255) for i, c in enumerate(POTSDAM_COLORS)}})
    with rasterio.open(files.split, "w", **grid) as dst:
        dst.write(split, 1)
    return files



def simulated_indian_pines(cube: str | Path, ground_truth: str | Path, *, sigma: float = 0.0,
                           noise_seed: int = 0):
    """The semi-synthetic Indian Pines cube of the LRTV/LRTDTV denoising literature (145×145×224, one real
    spectrum per ground-truth class, values in [0, 1]) with its Indian Pines ground truth, as
    ``(ArrayScene, LabelMap)``. ``sigma`` > 0 adds zero-mean Gaussian noise of that standard deviation to every
    band (drawn with ``noise_seed``): the clean cube is separable by any spectral classifier."""
    from hsikit.datasets import get
    from hsikit.io.matcubes import open_mat
    from hsikit.io.labels import LabelMap
    from hsikit.io.scene import ArrayScene

    if sigma < 0:
        raise InputError(f"noise sigma must be >= 0, got {sigma}")
    sc = open_mat(cube)
    gt = open_mat(ground_truth).data[0].astype(np.int32)
    if sc.data.shape[1:] != gt.shape:
        raise InputError(f"{Path(ground_truth).name} is {gt.shape[0]}x{gt.shape[1]} px, "
                         f"{Path(cube).name} {sc.data.shape[1]}x{sc.data.shape[2]} px")
    data = sc.data.astype(np.float32)
    if sigma > 0:
        data = data + np.float32(sigma) * np.random.default_rng(noise_seed).standard_normal(data.shape, np.float32)
    scene = ArrayScene(data, path=str(cube), tags={"dataset": "simulated_indian_pines", "noise_sigma": str(sigma)})
    ds = get("indian_pines")
    return scene, LabelMap(gt, list(ds.class_names), list(ds.class_colors))
