"""A documented simulator of Sentinel-2 L2A surface-reflectance time series over winter-wheat fields that are
healthy, infected by yellow rust, or nitrogen deficient — the training and test data of hsikit's FFDNN stress
model, since no labelled yellow-rust / N-deficiency Sentinel-2 data set is available.

What it simulates (all seeded, all parameters in :class:`SimConfig`):

* **Scene**: a grid of square wheat fields (``field_size`` px of 10 m) separated by 1-px roads, on a UTM grid;
  a few grid cells are bare fallow (label 0). Each field gets one class; labels and field ids are rasters.
* **Phenology**: plant area index PAI(t) = Lmin + (Lmax − Lmin)·σ((t − sos)/r1)·(1 − 0.3·sen(t)), a logistic
  green-up, and a senescent (brown) canopy fraction sen(t) = 0.95·σ((t − eos)/r2): together a double-logistic
  green LAI curve. Leaf chlorophyll Cab(t) rises slightly with green-up. Per field: green-up date ``sos``
  (DOY 90 ± 10: sowing date, variety, local climate), senescence date ``eos`` (DOY 175 + 0.5 (sos − 90) ± 6:
  cultivar maturity), rates r1 (7–11 d) and r2 (5–8 d), Lmax (management: density, fertiliser; 5 ± 0.7) and
  Cab (variety; 50 ± 5 µg/cm²). Within a field, smooth random fields vary Lmax (8 %), Cab (5 %) and sos
  (±1.5 d).
* **Canopy reflectance**: a dense-canopy reflectance R∞(λ, Cab) = a(λ) + b(λ)·exp(−Cab/κ(λ)) per S-2 band
  (red saturates at low chlorophyll, B05/B06 stay sensitive at high chlorophyll, so the red edge shifts to
  longer wavelengths with more chlorophyll), mixed with a brown senescent-leaf spectrum and a rust pustule /
  necrosis spectrum by area fraction; the canopy covers the soil with a Beer–Lambert gap fraction:
  R = R∞ + (R_soil − R∞)·exp(−K(λ)·PAI), K = 0.75 visible, 0.6 B05, 0.5 B06, 0.42 NIR (NIR K ≈ the CLAIR
  α = 0.4, so WDVI follows CLAIR). Soil: a loam spectrum scaled per field by brightness (0.7–1.35) and
  darkened on rainy dates (moisture), keeping the soil line through the origin.
* **Yellow rust**: onset between DOY 115 and 140; severity S(t) = S_max·foci(x, y)·σ((t − onset − 12)/5) with
  S_max 0.5–0.9 and patchy foci (0.35–1.3) inside the field. After onset: chlorosis (Cab × (1 − 0.45 S)), orange pustules / necrosis
  covering 0.35 S of the canopy, structure loss (PAI × (1 − 0.25 S)) and senescence up to ~12 days earlier.
* **Nitrogen deficiency**: from early season (DOY 80–100) chlorophyll falls by d = 25–50 % (× 0.6–1.4
  patchiness within the field), Lmax is 15–30 % lower, green-up 15–35 % slower, senescence 2–6 days earlier.
* **Acquisitions**: an irregular calendar over DOY 40–215 (5-day S-2A/B revisit with a random phase, an
  overlapping orbit on some days, ~5 % missing acquisitions), or ``n_dates`` random distinct days.
  Per date a scene-wide illumination/BRDF gain (±2.5 %) and a blue-weighted haze residual.
* **Clouds**: per date clear / partly cloudy / overcast; cloud blobs from thresholded smooth noise with thin
  edges (the faintest edges are left unflagged, as real masks leak), cirrus sheets, cloud shadows displaced
  from the clouds; the SCL layer codes them 3 (shadow), 8/9 (cloud medium/high), 10 (cirrus), 4/5 for
  vegetated/bare surfaces. Some dates miss a strip of the scene (NaN, ``valid`` false).
* **Noise**: 1 % multiplicative and 0.004 additive Gaussian noise per pixel and band.

What it does not simulate: real radiative transfer (PROSPECT/SAIL), BRDF geometry, adjacency effects, the
20 m resolution of B05–B07/B8A (all bands are 10 m here), other crops, other diseases or stresses (drought,
septoria, lodging), multi-year weather, or co-occurring stresses. Class differences are in the timing and
shape of the LAI and chlorophyll curves; single dates overlap between classes (see :func:`single_date_ndvi_oa`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsikit.errors import OptionError

#: simulated Sentinel-2 bands and their centre wavelengths (nm)
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
WAVELENGTHS = (490.0, 560.0, 665.0, 705.0, 740.0, 783.0, 842.0, 865.0, 1610.0, 2190.0)
CLASS_NAMES = ("healthy", "yellow rust", "nitrogen deficiency")
CLASS_COLORS = ("#1a9850", "#f46d43", "#e6c229")

# dense green canopy: R∞ = a + b·exp(−Cab/κ), per band in BANDS order
_A = np.array([0.025, 0.040, 0.020, 0.060, 0.240, 0.370, 0.440, 0.450, 0.210, 0.100])
_B = np.array([0.080, 0.180, 0.200, 0.250, 0.160, 0.060, 0.020, 0.020, 0.020, 0.020])
_KAPPA = np.array([10.0, 25.0, 12.0, 30.0, 35.0, 40.0, 40.0, 40.0, 50.0, 50.0])
_BROWN = np.array([0.080, 0.120, 0.160, 0.200, 0.240, 0.270, 0.300, 0.310, 0.380, 0.300])  # senescent leaves
_RUST = np.array([0.050, 0.140, 0.160, 0.220, 0.280, 0.300, 0.320, 0.330, 0.250, 0.150])  # pustules/necrosis
_SOIL = np.array([0.090, 0.120, 0.160, 0.175, 0.185, 0.192, 0.200, 0.206, 0.300, 0.260])  # dry loam
_ROAD = np.array([0.080, 0.090, 0.100, 0.104, 0.107, 0.109, 0.110, 0.111, 0.130, 0.125])  # asphalt
_EXT = np.array([0.75, 0.75, 0.75, 0.60, 0.50, 0.42, 0.42, 0.42, 0.50, 0.50])  # canopy extinction K(λ)


@dataclass
class SimConfig:
    """Scene layout, calendar, clouds and noise of a simulated series (see the module docstring)."""

    fields_per_class: int = 12
    field_size: int = 16
    fallow_fields: int = 2
    year: int = 2021
    start_doy: int = 40
    end_doy: int = 215
    n_dates: int | None = None
    overlap_orbit: float = 0.4
    missing: float = 0.05
    cloudy: float = 0.35
    overcast: float = 0.12
    noise: float = 0.004
    relative_noise: float = 0.01
    epsg: int = 32650
    origin: tuple[float, float] = (500000.0, 4000000.0)
    resolution: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fields_per_class < 1 or self.field_size < 2:
            raise OptionError("the simulator needs at least one field per class and fields of >= 2 px")
        if not 1 <= self.start_doy < self.end_doy <= 365:
            raise OptionError("start_doy/end_doy must satisfy 1 <= start < end <= 365")
        if self.n_dates is not None and not 2 <= self.n_dates <= self.end_doy - self.start_doy + 1:
            raise OptionError(f"n_dates must be between 2 and {self.end_doy - self.start_doy + 1}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance spatially smooth Gaussian noise."""
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (a - a.mean()) / max(a.std(), 1e-9)


def acquisition_calendar(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Sorted acquisition days of year: 5-day revisit with a random phase, overlap-orbit days, gaps."""
    if cfg.n_dates is not None:
        days = rng.choice(np.arange(cfg.start_doy, cfg.end_doy + 1), size=cfg.n_dates, replace=False)
        return np.sort(days)
    phase = int(rng.integers(0, 5))
    main = np.arange(cfg.start_doy + phase, cfg.end_doy + 1, 5)
    side = main + int(rng.choice([2, 3]))
    side = side[(side <= cfg.end_doy) & (rng.random(side.size) < cfg.overlap_orbit)]
    days = np.union1d(main, side)
    keep = rng.random(days.size) >= cfg.missing
    keep[[0, -1]] = True
    return days[keep]


def _layout(cfg: SimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """Field ids (0 = road/fallow), labels (0, 1..K), per-field classes and the fallow mask of a grid of fields."""
    k = len(CLASS_NAMES)
    n_fields = k * cfg.fields_per_class
    cells = n_fields + cfg.fallow_fields
    cols = int(np.ceil(np.sqrt(cells)))
    rows = int(np.ceil(cells / cols))
    step = cfg.field_size + 1
    h, w = rows * step + 1, cols * step + 1
    classes = rng.permutation(np.repeat(np.arange(1, k + 1), cfg.fields_per_class)).tolist()
    order = rng.permutation(rows * cols)[:cells]  # which cells hold fields; the fallow ones come last
    fid = np.zeros((h, w), np.int32)
    lab = np.zeros((h, w), np.uint8)
    fallow = np.zeros((h, w), bool)
    for i, cell in enumerate(order):
        r, c = divmod(int(cell), cols)
        ys, xs = slice(1 + r * step, 1 + r * step + cfg.field_size), slice(1 + c * step, 1 + c * step + cfg.field_size)
        if i < n_fields:
            fid[ys, xs] = i + 1
            lab[ys, xs] = classes[i]
        else:
            fallow[ys, xs] = True
    return fid, lab, classes, fallow


def _field_parameters(cfg: SimConfig, classes: list[int], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Per-field phenology, management, soil and stress parameters (documented in the module docstring)."""
    out = []
    for i, c in enumerate(classes):
        sos = 90 + rng.normal(0, 10)  # sowing date, variety and local climate; late green-up, late senescence
        p = {
            "field": i + 1, "class": CLASS_NAMES[c - 1],
            "sos": float(sos), "eos": float(175 + 0.5 * (sos - 90) + rng.normal(0, 6)),
            "r1": float(rng.uniform(7, 11)), "r2": float(rng.uniform(5, 8)),
            "lmax": float(np.clip(rng.normal(5.0, 0.7), 2.8, 7.0)), "lmin": float(rng.uniform(0.2, 0.45)),
            "cab": float(np.clip(rng.normal(50, 5), 35, 65)), "soil": float(rng.uniform(0.7, 1.35)),
        }
        if c == 2:  # yellow rust
            p.update(onset=float(rng.uniform(115, 140)), severity=float(rng.uniform(0.5, 0.9)))
        elif c == 3:  # nitrogen deficiency
            p.update(n_start=float(rng.uniform(80, 100)), n_deficit=float(rng.uniform(0.25, 0.5)),
                     lai_loss=float(rng.uniform(0.15, 0.30)), slow=float(rng.uniform(1.15, 1.35)),
                     early=float(rng.uniform(2, 6)))
            p["lmax"] *= 1 - p["lai_loss"]
            p["r1"] *= p["slow"]
            p["eos"] -= p["early"]
        out.append(p)
    return out


def _per_pixel(fid: np.ndarray, params: list[dict[str, Any]], key: str, default: float = 0.0) -> np.ndarray:
    table = np.array([default] + [p.get(key, default) for p in params], dtype=np.float64)
    return table[fid]


def _clouds(shape: tuple[int, int], rng: np.random.Generator, cfg: SimConfig) -> tuple[np.ndarray, ...]:
    """One date's cloud transmittance loss τ (0 clear .. 1 opaque), cirrus, shadow mask and SCL code map."""
    h, w = shape
    scl = np.zeros(shape, np.uint8)
    u = rng.random()
    if u < cfg.overcast:
        cover = rng.uniform(0.9, 1.0)
    elif u < cfg.overcast + cfg.cloudy:
        cover = rng.uniform(0.05, 0.6)
    else:
        cover = 0.0
    tau = np.zeros(shape)
    if cover > 0:
        n = _smooth(rng, shape, sigma=max(2.0, min(h, w) / 10))
        thr = np.quantile(n, 1 - cover)
        tau = np.clip((n - thr) / 0.6 + 0.15, 0, 1) * (n > thr - 0.1)  # a soft edge just outside the blobs
    cirrus = np.zeros(shape)
    if rng.random() < 0.15:
        cirrus = np.clip(_smooth(rng, shape, sigma=max(3.0, min(h, w) / 6)) * 0.015 + 0.02, 0, 0.05)
    dy, dx = int(rng.integers(3, 9)), int(rng.integers(-6, 7))
    shadow = np.roll(tau > 0.08, (dy, dx), axis=(0, 1)) & (tau <= 0.08)
    scl[cirrus > 0.025] = 10
    scl[shadow] = 3
    scl[tau > 0.08] = 8  # fainter edges stay unflagged, as real masks leak
    scl[tau > 0.6] = 9
    return tau, cirrus, shadow, scl


def simulate_series(cfg: SimConfig | None = None, **overrides: Any):
    """Simulate a series; returns an ``xarray.Dataset`` in the hsikit time-series layout.

    Variables: ``reflectance`` (time, band, y, x) float32 in [0, 1] (NaN where no data), ``cloud`` (time, y, x)
    bool (SCL 3/8/9/10), ``valid`` (time, y, x) bool, ``SCL`` (time, y, x) uint8, ``labels`` (y, x) uint8
    (0 = road/fallow, 1 healthy, 2 yellow rust, 3 nitrogen deficiency), ``fields`` (y, x) int32 (0 = none),
    ``soil`` (y, x) bool (the bare fallow fields: a soil mask for estimating the WDVI soil line).
    Coordinates ``time`` (datetime64[ns]), ``band``, ``wavelength``, ``y``, ``x`` (pixel centres, UTM); the CRS
    and transform are set with rioxarray. ``attrs`` hold the class names/colours, the config and the per-field
    parameters (JSON strings).
    """
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr
    from rasterio.transform import from_origin

    cfg = dataclasses.replace(cfg or SimConfig(), **overrides)
    rng = np.random.default_rng(cfg.seed)
    fid, lab, classes, fallow = _layout(cfg, rng)
    params = _field_parameters(cfg, classes, rng)
    h, w = fid.shape
    doys = acquisition_calendar(cfg, rng)
    n_b = len(BANDS)

    # per-pixel parameters: field values with smooth within-field variation
    crop = fid > 0
    lmax = _per_pixel(fid, params, "lmax") * (1 + 0.08 * _smooth(rng, (h, w), 2.0))
    lmin = _per_pixel(fid, params, "lmin")
    cab0 = _per_pixel(fid, params, "cab") * (1 + 0.05 * _smooth(rng, (h, w), 2.0))
    sos = _per_pixel(fid, params, "sos") + 1.5 * _smooth(rng, (h, w), 2.0)
    eos = _per_pixel(fid, params, "eos")
    r1, r2 = _per_pixel(fid, params, "r1", 9.0), _per_pixel(fid, params, "r2", 6.0)
    soil_b = np.where(crop | fallow, _per_pixel(fid, params, "soil", 1.0), 1.0)
    soil_b = np.where(fallow, rng.uniform(0.7, 1.35), soil_b) * (1 + 0.03 * _smooth(rng, (h, w), 1.5))
    is_rust, is_n = lab == 2, lab == 3
    onset = _per_pixel(fid, params, "onset", 1e4)
    foci = np.clip(0.85 + 0.3 * _smooth(rng, (h, w), 2.5), 0.35, 1.3)
    s_max = np.where(is_rust, _per_pixel(fid, params, "severity") * foci, 0.0)
    eos = eos - 10.0 * s_max  # rust: earlier senescence
    n_start = _per_pixel(fid, params, "n_start", 1e4)
    n_def = np.where(is_n, _per_pixel(fid, params, "n_deficit") * np.clip(1 + 0.2 * _smooth(rng, (h, w), 2.5), 0.6, 1.4), 0.0)
    road = ~(crop | fallow)

    refl = np.empty((doys.size, n_b, h, w), np.float32)
    scl = np.empty((doys.size, h, w), np.uint8)
    valid = np.ones((doys.size, h, w), bool)
    wet_field = rng.uniform(0.9, 1.0, size=len(params) + 1)[fid]
    for d, t in enumerate(doys.astype(np.float64)):
        sen = 0.95 * _sigmoid((t - eos) / r2)
        sev = s_max * _sigmoid((t - onset - 12.0) / 5.0)
        pai = (lmin + (lmax - lmin) * _sigmoid((t - sos) / r1) * (1 - 0.3 * sen)) * (1 - 0.25 * sev)
        cab = cab0 * (0.75 + 0.25 * _sigmoid((t - sos) / r1))
        cab = cab * (1 - n_def * _sigmoid((t - n_start) / 10.0)) * (1 - 0.45 * sev)
        les = np.minimum(0.35 * sev, 1 - sen)
        green = 1 - sen - les
        r_inf = _A[:, None, None] + _B[:, None, None] * np.exp(-cab[None] / _KAPPA[:, None, None])
        canopy = green[None] * r_inf + sen[None] * _BROWN[:, None, None] + les[None] * _RUST[:, None, None]
        wet = rng.uniform(0.72, 0.92) if rng.random() < 0.3 else 1.0  # rain darkens the soil scene-wide
        soil = _SOIL[:, None, None] * (soil_b * wet * wet_field)[None]
        gap = np.exp(-_EXT[:, None, None] * pai[None])
        surf = canopy + (soil - canopy) * gap
        surf = np.where(crop[None], surf, soil)
        surf = np.where(road[None], _ROAD[:, None, None] * (1 + 0.05 * rng.standard_normal((1, h, w))), surf)
        # illumination / BRDF residual and haze residual of the atmospheric correction
        gain = 1 + rng.normal(0, 0.025)
        haze = abs(rng.normal(0, 0.006)) * np.array([1.0, 0.6, 0.35, 0.25, 0.15, 0.1, 0.08, 0.08, 0.02, 0.0])
        surf = surf * gain + haze[:, None, None]
        ndvi = (surf[6] - surf[2]) / (surf[6] + surf[2])
        tau, cirrus, shadow, sc = _clouds((h, w), rng, cfg)
        cloud_r = rng.uniform(0.35, 0.7) * np.array([1.05, 1.03, 1.0, 1.0, 0.99, 0.98, 0.97, 0.97, 0.8, 0.65])
        obs = surf * (1 - tau[None]) + tau[None] * cloud_r[:, None, None] + cirrus[None]
        obs = np.where(shadow[None], obs * rng.uniform(0.35, 0.6), obs)
        obs = obs * (1 + cfg.relative_noise * rng.standard_normal(obs.shape)) + cfg.noise * rng.standard_normal(obs.shape)
        refl[d] = np.clip(obs, 0.0001, 1.0)
        sc = np.where(sc == 0, np.where(ndvi >= 0.2, 4, 5), sc).astype(np.uint8)
        if rng.random() < 0.08:  # a date whose swath misses part of the scene
            cut = int(rng.integers(w // 4, 3 * w // 4))
            refl[d, :, :, :cut] = np.nan
            valid[d, :, :cut] = False
            sc[:, :cut] = 0
        scl[d] = sc

    dates = np.array([np.datetime64(f"{cfg.year:04d}-01-01") + np.timedelta64(int(t) - 1, "D") for t in doys],
                     dtype="datetime64[ns]")
    res = cfg.resolution
    x0, y0 = cfg.origin
    transform = from_origin(x0, y0, res, res)
    coords = {"time": dates, "band": list(BANDS), "wavelength": ("band", list(WAVELENGTHS)),
              "y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)}
    cloud = np.isin(scl, (3, 8, 9, 10))
    ds = xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), refl), "cloud": (("time", "y", "x"), cloud),
         "valid": (("time", "y", "x"), valid), "SCL": (("time", "y", "x"), scl),
         "labels": (("y", "x"), lab), "fields": (("y", "x"), fid), "soil": (("y", "x"), fallow)},
        coords=coords,
        attrs={"class_names": json.dumps(list(CLASS_NAMES)), "class_colors": json.dumps(list(CLASS_COLORS)),
               "simulator": json.dumps(dataclasses.asdict(cfg)), "field_parameters": json.dumps(params),
               "description": "hsikit simulated Sentinel-2 L2A wheat stress series (not real data)"},
    )
    ds = ds.rio.write_crs(f"EPSG:{cfg.epsg}").rio.write_transform(transform)
    return ds


def _best_interval_rule(v: np.ndarray, y: np.ndarray, k: int, n_thr: int = 64):
    """Best rule "class order[0] below a, order[1] in [a, b), order[2..] above b" on values ``v``, labels ``y``
    (1..k): returns (accuracy, order, a, b). Counts per class below each candidate threshold make it O(n)."""
    from itertools import permutations

    thr = np.unique(np.quantile(v, np.linspace(0.0, 1.0, n_thr)))
    below = np.stack([np.searchsorted(np.sort(v[y == c]), thr, side="left") for c in range(1, k + 1)])  # (k, n)
    total = np.array([(y == c).sum() for c in range(1, k + 1)])[:, None]
    best = (-1.0, None, 0.0, 0.0)
    i, j = np.triu_indices(thr.size)
    for order in permutations(range(k), min(k, 3)):
        o0, o1, o2 = order[0], order[1 % len(order)], order[-1]
        if k == 2:
            correct = below[o0][i] + total[o2, 0] - below[o2][i]
        else:
            correct = below[o0][i] + (below[o1][j] - below[o1][i]) + (total[o2, 0] - below[o2][j])
        m = int(np.argmax(correct))
        acc = float(correct[m]) / max(v.size, 1)
        if acc > best[0]:
            best = (acc, tuple(o + 1 for o in order), float(thr[i[m]]), float(thr[j[m]]))
    return best


def single_date_ndvi_oa(ds: Any, train_fields: np.ndarray | None = None) -> dict[str, Any]:
    """How well a single-date NDVI threshold rule separates the classes: for every mostly cloud-free date, the
    best two-threshold rule (NDVI interval → class, any class order) is fitted on the cloud-free labelled pixels
    of ``train_fields`` (default: all fields, scored on the same pixels) and scored on the other fields.
    Returns ``oa`` on the scored fields of the date whose rule fits the fitting fields best (with its date,
    thresholds and class order), and ``oracle_oa``/``oracle_date``: the best scored OA over all dates, an
    optimistic bound."""
    refl = ds["reflectance"]
    nir = np.asarray(refl.sel(band="B08").values, np.float64)
    red = np.asarray(refl.sel(band="B04").values, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (nir - red) / (nir + red)
    lab = np.asarray(ds["labels"].values)
    fields = np.asarray(ds["fields"].values)
    bad = np.asarray(ds["cloud"].values) | ~np.asarray(ds["valid"].values)
    fit = np.isin(fields, train_fields) if train_fields is not None else fields > 0
    score = ((fields > 0) & ~fit) if train_fields is not None else fit
    k = int(lab.max())
    best: dict[str, Any] = {"oa": 0.0, "date": None, "fit_oa": -1.0, "oracle_oa": 0.0, "oracle_date": None}
    for d in range(ndvi.shape[0]):
        ok = np.isfinite(ndvi[d]) & ~bad[d] & (lab > 0)
        f_m, s_m = ok & fit, ok & score
        # a date counts only when most of the pixels are cloud-free
        if f_m.sum() < 0.8 * (fit & (lab > 0)).sum() or s_m.sum() < 0.8 * (score & (lab > 0)).sum():
            continue
        fit_oa, order, a, b = _best_interval_rule(ndvi[d][f_m], lab[f_m], k)
        vs, ys = ndvi[d][s_m], lab[s_m]
        pred = np.where(vs < a, order[0], np.where(vs < b, order[1 % len(order)], order[-1]))
        oa = float((pred == ys).mean())
        date = str(ds["time"].values[d])[:10]
        if oa > best["oracle_oa"]:
            best.update(oracle_oa=oa, oracle_date=date)
        if fit_oa > best["fit_oa"]:  # the date is chosen on the fitting fields, like any trained rule
            best.update(oa=oa, fit_oa=fit_oa, date=date, thresholds=[a, b],
                        order=[CLASS_NAMES[o - 1] if o <= len(CLASS_NAMES) else str(o) for o in order])
    return best


def write_series(ds: Any, outdir: str | Path, *, overwrite: bool = False, prefix: str = "S2_SIM") -> dict[str, Any]:
    """Write a simulated series under ``outdir``: ``series/<prefix>_YYYYMMDD.tif`` per date (uint16 reflectance
    × 10000, nodata 0, band descriptions B02…B12, tag ``ACQUISITION_DATE``) each with a sibling
    ``<stem>_SCL.tif``, and beside the ``series`` folder ``labels.tif`` (class map with names and colours),
    ``fields.tif`` (field ids), ``soil.tif`` (1 = bare fallow soil) and ``series.json`` (simulator settings and
    per-field parameters). Every file is
    written atomically; existing files are only replaced with ``overwrite``. Returns the paths by role
    (``series`` is the folder to hand to ``open_series`` / ``hsikit train stress``)."""
    from rasterio.windows import Window

    from hsikit.io.atomic import check_output, temp_path
    from hsikit.io.legend import Legend
    from hsikit.io.writer import RasterWriter

    out = Path(outdir)
    dates_dir = out / "series"
    dates_dir.mkdir(parents=True, exist_ok=True)
    crs, transform = ds.rio.crs, ds.rio.transform()
    h, w = int(ds.sizes["y"]), int(ds.sizes["x"])
    win = Window(0, 0, w, h)
    names = [str(b) for b in ds["band"].values]
    wl = [float(v) for v in ds["wavelength"].values] if "wavelength" in ds.coords else [None] * len(names)
    dates = [str(t)[:10] for t in ds["time"].values]
    paths: list[Path] = []
    for d, date in enumerate(dates):
        p = dates_dir / f"{prefix}_{date.replace('-', '')}.tif"
        paths.append(p)
        check_output(p, overwrite)
        check_output(p.with_name(p.stem + "_SCL.tif"), overwrite)
    common = dict(width=w, height=h, crs=crs, transform=transform, overwrite=overwrite)
    refl = ds["reflectance"]
    for d, (date, p) in enumerate(zip(dates, paths)):
        r = np.asarray(refl.isel(time=d).values, dtype=np.float64)
        dn = np.where(np.isfinite(r), np.clip(np.round(r * 10000), 1, 65535), 0).astype(np.uint16)
        tags = {"ACQUISITION_DATE": date, "BOA_QUANTIFICATION_VALUE": "10000", "BOA_ADD_OFFSET": "0",
                "HSIKIT_SIMULATED": "1"}
        band_tags = [{"wavelength": f"{v:g}", "wavelength_units": "nm"} if v else {} for v in wl]
        with RasterWriter(p, count=len(names), dtype="uint16", nodata=0, kind="continuous",
                          band_descriptions=names, band_tags=band_tags, tags=tags, **common) as wr:
            wr.write(dn, win)
        with RasterWriter(p.with_name(p.stem + "_SCL.tif"), count=1, dtype="uint8", nodata=0, kind="continuous",
                          band_descriptions=["SCL"], tags={"ACQUISITION_DATE": date}, **common) as wr:
            wr.write(np.asarray(ds["SCL"].isel(time=d).values, np.uint8)[None], win)
    class_names = json.loads(ds.attrs.get("class_names", json.dumps(list(CLASS_NAMES))))
    class_colors = json.loads(ds.attrs.get("class_colors", json.dumps(list(CLASS_COLORS))))
    labels = out / "labels.tif"
    with RasterWriter(labels, count=1, dtype="uint8", nodata=0, kind="categorical",
                      legend=Legend.from_names(class_names, class_colors), band_descriptions=["class"], **common) as wr:
        wr.write(np.asarray(ds["labels"].values, np.uint8)[None], win)
    fields = out / "fields.tif"
    with RasterWriter(fields, count=1, dtype="uint16", nodata=0, kind="continuous", band_descriptions=["field id"],
                      **common) as wr:
        wr.write(np.asarray(ds["fields"].values, np.uint16)[None], win)
    soil = out / "soil.tif"
    with RasterWriter(soil, count=1, dtype="uint8", nodata=0, kind="categorical",
                      legend=Legend.from_names(["bare soil"], ["#a6611a"]), band_descriptions=["soil mask"],
                      **common) as wr:
        wr.write(np.asarray(ds["soil"].values, np.uint8)[None], win)
    meta = out / "series.json"
    check_output(meta, overwrite)
    tmp = temp_path(meta)
    tmp.write_text(json.dumps({"description": ds.attrs.get("description"), "class_names": class_names,
                               "class_colors": class_colors, "dates": dates,
                               "simulator": json.loads(ds.attrs.get("simulator", "{}")),
                               "fields": json.loads(ds.attrs.get("field_parameters", "[]"))}, indent=2) + "\n")
    tmp.replace(meta)
    return {"series": dates_dir, "dates": paths, "scl": [p.with_name(p.stem + "_SCL.tif") for p in paths], "labels": labels,
            "fields": fields, "soil": soil, "metadata": meta}
