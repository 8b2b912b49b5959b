"""The benchmark hyperspectral scenes hsikit knows: where to get them, how to check them, how to open them.

Files live in ``<data dir>/<key>/`` (a flat ``<data dir>/`` is also searched, for copies users already have).
The data dir is ``--data-dir``, else ``$HSIKIT_DATA``, else the user cache (``~/.cache/hsikit/datasets``).
Nothing here touches the network: :func:`locate` and :func:`load` work offline on files already present.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.matcubes import CLASS_NAMES
from hsikit.io.scene import ArrayScene

if TYPE_CHECKING:
    from hsikit.io.labels import LabelMap
    from hsikit.io.legend import Legend

#: environment variable naming the data dir
DATA_ENV = "HSIKIT_DATA"

_CHECKSUM = re.compile(r"^(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})$")

# SPy's default class palette (``spectral.spy_colors``), the colours ``spectral.imshow`` draws these benchmark
# ground truths with; value v gets entry v (entry 0, black, is "unlabelled").
_SPY_COLORS = [
    "#ff0000", "#00ff00", "#0000ff", "#ffff00", "#ff00ff", "#00ffff", "#c86400", "#00c864", "#6400c8",
    "#c80064", "#64c800", "#0064c8", "#964b4b", "#4b964b", "#4b4b96", "#ff6464",
]

_GIC_PAGE = "https://www.ehu.eus/ccwintco/index.php/Hyperspectral_Remote_Sensing_Scenes"
_GIC = "https://www.ehu.eus/ccwintco/uploads/"
_GIC_TERMS = ("Distributed for research by the Grupo de Inteligencia Computacional (UPV/EHU), " + _GIC_PAGE
              + "; no formal licence; cite the original data providers (see the citation).")

# Where the published checksums come from (nobody publishes checksums of the GIC files themselves).
_SRC_IP = ("md5 published with these GIC URLs in forkbabu/vision torchvision/datasets/indianpines.py; the same "
           "value is listed by public download scripts that also list the PaviaU/Salinas md5s")
_SRC_MIRROR = ("md5 published in public HSI download scripts/READMEs (same files as the GIC copies, fetched via "
               "the gokriznastic/HybridSN mirror); they list the Indian Pines md5 of forkbabu/vision too")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: direct URL (None: manual download only), checksum ``"md5:..."``/``"sha256:..."``."""

    filename: str
    url: str | None
    checksum: str | None = None
    size: int | None = None
    #: where a published checksum was found (None for unverified files)
    checksum_source: str | None = None

    def __post_init__(self) -> None:
        if self.checksum is not None and not _CHECKSUM.match(self.checksum):
            raise ValueError(f"{self.filename}: checksum must be 'md5:<32 hex>' or 'sha256:<64 hex>'")

    @property
    def verified(self) -> bool:
        """True when downloads of this file can be checked against a known checksum."""
        return self.checksum is not None

    @property
    def algorithm(self) -> str | None:
        """``"md5"``/``"sha256"``, or None without a checksum."""
        return self.checksum.split(":", 1)[0] if self.checksum else None

    @property
    def digest(self) -> str | None:
        """The expected hex digest, or None."""
        return self.checksum.split(":", 1)[1] if self.checksum else None


@dataclass(frozen=True)
class Dataset:
    """A benchmark scene: what it is, its classes (values 1..K; 0 = unlabelled) and the files that hold it."""

    key: str
    title: str
    sensor: str
    rows: int
    cols: int
    bands: int
    class_names: tuple[str, ...]
    class_colors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    cube_file: str
    gt_file: str
    #: .mat variable names of cube and ground truth (None: the file's only image array)
    cube_variable: str | None
    gt_variable: str | None
    citation: str
    licence: str
    landing_page: str
    #: how to obtain the files by hand when there is no direct URL (None when every file has one)
    manual: str | None = None

    def __post_init__(self) -> None:
        names = {f.filename for f in self.files}
        if self.cube_file not in names or self.gt_file not in names:
            raise ValueError(f"{self.key}: cube/ground-truth files must be among its files")
        if len(self.class_names) != len(self.class_colors):
            raise ValueError(f"{self.key}: class names and colours differ in length")

    @property
    def num_classes(self) -> int:
        """K: classes are values 1..K."""
        return len(self.class_names)

    @property
    def size(self) -> str:
        """``rows×cols×bands``"""
        return f"{self.rows}×{self.cols}×{self.bands}"

    @property
    def verified(self) -> bool:
        """True when every file has a published checksum."""
        return all(f.verified for f in self.files)

    def file(self, filename: str) -> RemoteFile:
        """The entry of one of this dataset's files (KeyError if it has none of that name)."""
        for f in self.files:
            if f.filename == filename:
                return f
        raise KeyError(filename)

    def legend(self) -> Legend:
        """The class names and colours as a :class:`~hsikit.io.legend.Legend`."""
        from hsikit.io.legend import Legend

        return Legend.from_names(self.class_names, self.class_colors)


def _gic(key: str, title: str, sensor: str, shape: tuple[int, int, int], files: list[tuple[str, str, str | None]],
         variables: tuple[str, str], citation: str, source: str | None) -> Dataset:
    """A dataset distributed as two .mat files (cube, ground truth) on the GIC page."""
    names = tuple(CLASS_NAMES[key])
    remote = tuple(RemoteFile(name, _GIC + path, checksum, None, source if checksum else None)
                   for name, path, checksum in files)
    return Dataset(key=key, title=title, sensor=sensor, rows=shape[0], cols=shape[1], bands=shape[2],
                   class_names=names, class_colors=tuple(_SPY_COLORS[: len(names)]), files=remote,
                   cube_file=files[0][0], gt_file=files[1][0], cube_variable=variables[0],
                   gt_variable=variables[1], citation=citation, licence=_GIC_TERMS, landing_page=_GIC_PAGE)


_HAM_2005 = ("Ham, Chen, Crawford, Ghosh (2005), Investigation of the random forest framework for classification "
             "of hyperspectral data, IEEE TGRS 43(3):492-501; data courtesy of the Center for Space Research, "
             "University of Texas at Austin.")
_PAVIA = ("ROSIS-03 data (DLR) courtesy of Prof. Paolo Gamba, Telecommunications and Remote Sensing Laboratory, "
          "University of Pavia, Italy.")
_HOUSTON_PAGE = "https://hyperspectral.ee.uh.edu/?page_id=459"

_ENTRIES = [
    _gic("indian_pines", "Indian Pines (corrected)", "AVIRIS", (145, 145, 200),
         [("Indian_pines_corrected.mat", "6/67/Indian_pines_corrected.mat", "md5:66dbc9f4a9b7c9b1445f60a87b505101"),
          ("Indian_pines_gt.mat", "c/c4/Indian_pines_gt.mat", "md5:9414943dac1d80faaa9165c8b460510c")],
         ("indian_pines_corrected", "indian_pines_gt"),
         "Baumgardner, Biehl, Landgrebe (2015), 220 Band AVIRIS Hyperspectral Image Data Set: June 12, 1992 "
         "Indian Pine Test Site 3, Purdue University Research Repository, doi:10.4231/R7RX991C.", _SRC_IP),
    _gic("pavia_university", "Pavia University", "ROSIS-03", (610, 340, 103),
         [("PaviaU.mat", "e/ee/PaviaU.mat", "md5:165a3c7488995f54a19add47c7eed4cd"),
          ("PaviaU_gt.mat", "5/50/PaviaU_gt.mat", "md5:b8c3ba44b077c26e24220463aa855bd3")],
         ("paviaU", "paviaU_gt"), _PAVIA, _SRC_MIRROR),
    _gic("pavia_centre", "Pavia Centre", "ROSIS-03", (1096, 715, 102),
         [("Pavia.mat", "e/e3/Pavia.mat", None), ("Pavia_gt.mat", "5/53/Pavia_gt.mat", None)],
         ("pavia", "pavia_gt"), _PAVIA, None),
    _gic("salinas", "Salinas (corrected)", "AVIRIS", (512, 217, 204),
         [("Salinas_corrected.mat", "a/a3/Salinas_corrected.mat", "md5:485d8802f4a6b4ebc0767d48dd0da06b"),
          ("Salinas_gt.mat", "f/fa/Salinas_gt.mat", "md5:7b8da653a61bb0271b27b37fb926390f")],
         ("salinas_corrected", "salinas_gt"),
         "AVIRIS scene over Salinas Valley, California (NASA/JPL), as prepared by the GIC group (UPV/EHU).",
         _SRC_MIRROR),
    _gic("ksc", "Kennedy Space Center", "AVIRIS", (512, 614, 176),
         [("KSC.mat", "2/26/KSC.mat", None), ("KSC_gt.mat", "a/a6/KSC_gt.mat", None)],
         ("KSC", "KSC_gt"), "AVIRIS, Kennedy Space Center, Florida, 23 March 1996. " + _HAM_2005, None),
    _gic("botswana", "Botswana", "EO-1 Hyperion", (1476, 256, 145),
         [("Botswana.mat", "7/72/Botswana.mat", None), ("Botswana_gt.mat", "5/58/Botswana_gt.mat", None)],
         ("Botswana", "Botswana_gt"), "NASA EO-1 Hyperion, Okavango Delta, Botswana, 31 May 2001. " + _HAM_2005,
         None),
    Dataset(
        key="houston2013", title="Houston 2013 (GRSS DFC)", sensor="ITRES CASI-1500",
        rows=349, cols=1905, bands=144, class_names=tuple(CLASS_NAMES["houston2013"]),
        class_colors=tuple(_SPY_COLORS[:15]),
        files=(RemoteFile("Houston.mat", None), RemoteFile("Houston_gt.mat", None)),
        cube_file="Houston.mat", gt_file="Houston_gt.mat", cube_variable=None, gt_variable=None,
        citation="Debes et al. (2014), Hyperspectral and LiDAR Data Fusion: Outcome of the 2013 GRSS Data Fusion "
                 "Contest, IEEE JSTARS 7(6):2405-2418. Acknowledge the Hyperspectral Image Analysis group and the "
                 "NSF-funded Center for Airborne Laser Mapping (NCALM), University of Houston.",
        licence="Distributed by the University of Houston / IEEE GRSS after registration on " + _HOUSTON_PAGE
                + "; follow the terms given there (no direct download URL, no redistribution by hsikit).",
        landing_page=_HOUSTON_PAGE,
        manual=(
            "Houston 2013 has no direct download URL. Register and download the GRSS Data Fusion Contest 2013 "
            f"data from {_HOUSTON_PAGE}, then save the 144-band CASI cube (349x1905) as Houston.mat and the "
            "ground truth (values 0..15, 0 = unlabelled) as Houston_gt.mat, one image array in each, into "
            "{dir}. Or serve your copies and pass --mirror URL (or set HSIKIT_DATASETS_MIRROR)."
        ),
    ),
]

#: every dataset by key
DATASETS: dict[str, Dataset] = {d.key: d for d in _ENTRIES}

_ALIASES = {"ip": "indian_pines", "indianpines": "indian_pines", "pu": "pavia_university", "paviau": "pavia_university",
            "pc": "pavia_centre", "pavia_center": "pavia_centre", "paviac": "pavia_centre", "sa": "salinas",
            "sv": "salinas", "kennedy_space_center": "ksc", "bw": "botswana", "houston": "houston2013",
            "houston_2013": "houston2013", "grss_dfc_2013": "houston2013"}


def get(key: str) -> Dataset:
    """The catalogue entry for ``key`` (case-insensitive; a few common abbreviations such as ``IP``/``PU`` work)."""
    k = key.strip().lower().replace("-", "_")
    k = _ALIASES.get(k, k)
    if k not in DATASETS:
        raise OptionError(f"unknown dataset {key!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[k]


# -- data dir ------------------------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/hsikit/datasets`` (``~/.cache/...``); ``%LOCALAPPDATA%`` on Windows."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "hsikit" / "datasets"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hsikit" / "datasets"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` if given, else ``$HSIKIT_DATA``, else :func:`default_data_dir` (``~`` expanded; not created)."""
    if data_dir is not None and str(data_dir):
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else default_data_dir()


def dataset_dir(key: str, data_dir: str | Path | None = None) -> Path:
    """Where downloads of ``key`` go: ``<data dir>/<key>``."""
    return resolve_data_dir(data_dir) / get(key).key


# -- offline lookup ------------------------------------------------------------------------------------------------
def find_files(key: str, data_dir: str | Path | None = None) -> dict[str, Path | None]:
    """Every file of ``key`` mapped to its path in the data dir (``<dir>/<key>/`` first, then ``<dir>/``) or None."""
    ds = get(key)
    root = resolve_data_dir(data_dir)
    found: dict[str, Path | None] = {}
    for f in ds.files:
        found[f.filename] = next((p for p in (root / ds.key / f.filename, root / f.filename) if p.is_file()), None)
    return found


def status(key: str, data_dir: str | Path | None = None) -> str:
    """``"present"`` (all files), ``"missing"`` (none) or ``"partial"``; files are not checksummed here."""
    found = find_files(key, data_dir).values()
    n = sum(p is not None for p in found)
    return "present" if n == len(found) else "missing" if n == 0 else "partial"


def locate(key: str, data_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of all of ``key``'s files already in the data dir; :class:`InputError` naming the missing ones."""
    ds = get(key)
    found = find_files(ds.key, data_dir)
    missing = [name for name, p in found.items() if p is None]
    if missing:
        where = resolve_data_dir(data_dir) / ds.key
        raise InputError(f"{ds.key}: {', '.join(missing)} not found in {where}; "
                         f"run `hsikit datasets download {ds.key}` (or copy the files there)")
    return {name: p for name, p in found.items() if p is not None}


class Loaded(NamedTuple):
    """:func:`load`'s result: the cube as a Scene and the ground truth (int32, 0 = unlabelled)."""

    scene: ArrayScene
    labels: np.ndarray

    def label_map(self) -> LabelMap:
        """The ground truth as a :class:`~hsikit.io.labels.LabelMap` with the dataset's names and colours."""
        from hsikit.io.labels import LabelMap

        ds = get(self.scene.tags["dataset"])
        return LabelMap(self.labels, list(ds.class_names), list(ds.class_colors))


def _open_variable(path: Path, variable: str | None) -> ArrayScene:
    """open_mat with the catalogue's variable, or the file's only image array when a re-saved copy renamed it."""
    from hsikit.io.matcubes import open_mat

    if variable is not None:
        import scipy.io

        try:
            names = {name for name, _, _ in scipy.io.whosmat(str(path))}
        except Exception:  # v7.3/HDF5 or not a .mat: let open_mat report it
            names = {variable}
        if variable not in names:
            variable = None
    return open_mat(path, variable)


def load(key: str, data_dir: str | Path | None = None) -> Loaded:
    """Open a dataset from files already present (no network): ``(scene, labels)``.

    ``scene`` is the cube ``(bands, rows, cols)`` as an :class:`~hsikit.io.scene.ArrayScene` with the dataset's
    class names and ``tags["dataset"]``; ``labels`` is the ground truth, int32 ``(rows, cols)``, 0 = unlabelled,
    1..K = ``scene.class_names``.
    """
    ds = get(key)
    paths = locate(ds.key, data_dir)
    cube = _open_variable(paths[ds.cube_file], ds.cube_variable)
    if cube.count < 2:
        raise InputError(f"{ds.cube_file} holds a single-band image; expected the {ds.title} cube")
    gt = _open_variable(paths[ds.gt_file], ds.gt_variable)
    if gt.count != 1 or np.dtype(gt.dtype).kind not in "ui":
        raise InputError(f"{ds.gt_file} is not an integer class map (got {gt.count} bands of {gt.dtype})")
    labels = np.asarray(gt.read()[0], dtype=np.int32)
    if labels.shape != (cube.height, cube.width):
        raise InputError(f"{ds.gt_file} is {labels.shape[0]}x{labels.shape[1]} but {ds.cube_file} is "
                         f"{cube.height}x{cube.width}")
    if labels.size and (labels.min() < 0 or labels.max() > ds.num_classes):
        raise InputError(f"{ds.gt_file} holds class values {labels.min()}..{labels.max()}; "
                         f"{ds.title} has classes 1..{ds.num_classes}")
    cube.class_names = list(ds.class_names)
    cube.tags.update(dataset=ds.key, ground_truth=str(paths[ds.gt_file]))
    return Loaded(cube, labels)
