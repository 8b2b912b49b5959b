"""The classic hyperspectral benchmark scenes: MATLAB cubes and ground truths, AVIRIS calibration files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsikit.errors import InputError
from hsikit.io.scene import ArrayScene

#: class names (values 1..K) of the public benchmark ground truths
CLASS_NAMES: dict[str, list[str]] = {
    "indian_pines": [
        "Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees", "Grass-pasture-mowed",
        "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill", "Soybean-clean", "Wheat", "Woods",
        "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers",
    ],
    "pavia_university": [
        "Asphalt", "Meadows", "Gravel", "Trees", "Painted metal sheets", "Bare Soil", "Bitumen",
        "Self-Blocking Bricks", "Shadows",
    ],
    "pavia_centre": [
        "Water", "Trees", "Asphalt", "Self-Blocking Bricks", "Bitumen", "Tiles", "Shadows", "Meadows", "Bare Soil",
    ],
    "salinas": [
        "Brocoli_green_weeds_1", "Brocoli_green_weeds_2", "Fallow", "Fallow_rough_plow", "Fallow_smooth", "Stubble",
        "Celery", "Grapes_untrained", "Soil_vinyard_develop", "Corn_senesced_green_weeds", "Lettuce_romaine_4wk",
        "Lettuce_romaine_5wk", "Lettuce_romaine_6wk", "Lettuce_romaine_7wk", "Vinyard_untrained",
        "Vinyard_vertical_trellis",
    ],
    "ksc": [
        "Scrub", "Willow swamp", "Cabbage palm hammock", "Cabbage palm/oak hammock", "Slash pine",
        "Oak/broadleaf hammock", "Hardwood swamp", "Graminoid marsh", "Spartina marsh", "Cattail marsh",
        "Salt marsh", "Mud flats", "Water",
    ],
    "botswana": [
        "Water", "Hippo grass", "Floodplain grasses 1", "Floodplain grasses 2", "Reeds", "Riparian", "Firescar",
        "Island interior", "Acacia woodlands", "Acacia shrublands", "Acacia grasslands", "Short mopane",
        "Mixed mopane", "Exposed soils",
    ],
    "houston2013": [
        "Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water", "Residential",
        "Commercial", "Road", "Highway", "Railway", "Parking Lot 1", "Parking Lot 2", "Tennis Court",
        "Running Track",
    ],
}

_STEMS = {
    "indian_pines": ("indian_pines", "92av3", "indianpines"),
    "pavia_university": ("paviau", "pavia_university", "paviauniversity"),
    "pavia_centre": ("pavia_gt", "pavia.mat", "paviac", "pavia_centre", "pavia_center"),
    "salinas": ("salinas",),
    "ksc": ("ksc",),
    "botswana": ("botswana",),
    "houston2013": ("houston", "grss2013", "grss_dfc_2013"),
}
_SHAPES = {(145, 145): "indian_pines", (610, 340): "pavia_university", (1096, 715): "pavia_centre",
           (512, 217): "salinas", (512, 614): "ksc", (1476, 256): "botswana", (349, 1905): "houston2013"}


def identify(path: str | Path, shape: tuple[int, int] | None = None) -> str | None:
    """Benchmark dataset name from the file name, else from the (rows, cols) shape."""
    stem = Path(path).name.lower()
    for name, keys in _STEMS.items():
        if any(stem.startswith(k) or k in stem for k in keys):
            return name
    return _SHAPES.get(tuple(shape)) if shape is not None else None


def class_names_for(path: str | Path, shape: tuple[int, int] | None = None) -> list[str] | None:
    name = identify(path, shape)
    return list(CLASS_NAMES[name]) if name else None


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        try:
            import h5py
        except ImportError:
            raise InputError(f"{path.name} is a MATLAB v7.3 (HDF5) file; install h5py to read it") from None
        with h5py.File(path, "r") as f:
            # h5py sees MATLAB arrays transposed (column-major order)
            return {k: np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except ValueError as e:
        raise InputError(f"{path.name} is not a readable MATLAB file: {e}") from None


def open_mat(path: str | Path, variable: str | None = None) -> ArrayScene:
    """A ``.mat`` benchmark cube ``(rows, cols, bands)`` or ground truth ``(rows, cols)`` as an ArrayScene (no CRS)."""
    p = Path(path)
    arrays = {k: v for k, v in _load_mat(p).items() if isinstance(v, np.ndarray) and v.dtype.kind in "uifb"}
    if variable is not None:
        if variable not in arrays:
            raise InputError(f"{p.name} has no numeric variable {variable!r}; it has {sorted(arrays)}")
        arr = arrays[variable]
    else:
        cands = {k: v for k, v in arrays.items() if v.ndim in (2, 3) and min(v.shape[:2]) > 1}
        if len(cands) != 1:
            raise InputError(f"{p.name} holds {len(cands)} image arrays {sorted(cands)}; choose one with --variable")
        variable, arr = next(iter(cands.items()))
    if arr.ndim == 2:
        data = arr[None]
        names = class_names_for(p, arr.shape) if arr.dtype.kind in "ui" else None
    elif arr.ndim == 3:
        data = np.ascontiguousarray(np.transpose(arr, (2, 0, 1)))
        names = None
    else:
        raise InputError(f"{p.name}:{variable} has {arr.ndim} dimensions; expected 2 or 3")
    return ArrayScene(data, path=str(p), class_names=names, tags={"variable": variable})


def read_spc(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """AVIRIS band calibration (``.spc``): centre wavelengths and FWHM in nm, one band per line."""
    wl, fw = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            try:
                wl.append(float(parts[0]))
                fw.append(float(parts[1]))
            except ValueError:
                continue
    if not wl:
        raise InputError(f"{Path(path).name} holds no band calibration lines")
    return np.asarray(wl), np.asarray(fw)
