"""Synthetic degradations of hyperspectral cubes for restoration training and evaluation.

Cubes are float32 ``(C, H, W)`` arrays (band first, values nominally in [0, 1]). Every function returns a
new float32 array and never modifies its input. Random functions take a ``numpy.random.Generator`` so a
seed reproduces the result exactly.

The recipes follow the training and test protocols of the restoration papers hsikit re-implements:

- noise: the QRNN3D protocol used by HSDT's reference training scripts (i.i.d. Gaussian with one sigma for
  every band; non-i.i.d. Gaussian with a sigma per band drawn from {10, 30, 50, 70}/255; stripes, dead lines and
  impulse noise, each on a random third of the bands; "mixture" = the three on disjoint thirds on top of
  non-i.i.d. Gaussian) and MP-HSIR's task definitions (complex noise, Poisson);
- blur, super-resolution inputs, inpainting, band completion, haze: how MP-HSIR synthesises each of its tasks;
- antialiased bicubic down-sampling: the SSPSR data protocol ESSAformer trains with (like MATLAB ``imresize``).

On top of the functions sits a small composable layer: :class:`Degradation` (a name plus parameters),
the :data:`DEGRADATIONS` registry, :func:`parse_degradation` for CLI strings such as
``"gaussian:sigma=30"`` and :func:`degrade`, which applies a list of degradations in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from hsikit.errors import OptionError

__all__ = [
    "COMPLEX_CASES",
    "DEGRADATIONS",
    "DOWNSAMPLE_METHODS",
    "Degradation",
    "DegradationSpec",
    "Degraded",
    "band_mask",
    "complex_noise",
    "deadline_noise",
    "degrade",
    "downsample",
    "gaussian_blur",
    "gaussian_kernel",
    "gaussian_noise",
    "haze",
    "impulse_noise",
    "list_degradations",
    "motion_blur",
    "motion_kernel",
    "nearest_upsample",
    "noniid_gaussian_noise",
    "parse_degradation",
    "parse_degradations",
    "pixel_mask",
    "poisson_noise",
    "smooth_random_field",
    "stripe_noise",
]

DEFAULT_SIGMAS: tuple[float, ...] = (10 / 255, 30 / 255, 50 / 255, 70 / 255)
COMPLEX_CASES: tuple[str, ...] = ("noniid", "stripe", "deadline", "impulse", "mixture", "random")
DOWNSAMPLE_METHODS: tuple[str, ...] = ("bicubic", "bicubic-noaa", "gaussian")


# --------------------------------------------------------------------------------------------------
# helpers


def _cube(x: np.ndarray) -> np.ndarray:
    """Validate a (C, H, W) cube and return it as float32 (a copy is made later by each function)."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise OptionError(f"expected a (bands, rows, cols) cube, got an array with shape {x.shape}")
    return x.astype(np.float32, copy=False)


def _check_ratio(ratio: float, what: str) -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio < 1.0:
        raise OptionError(f"{what} must be in [0, 1), got {ratio}")
    return ratio


def _check_scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise OptionError(f"scale must be an integer >= 1, got {scale}")
    return int(scale)


def _pick_bands(
    rng: np.random.Generator, num_bands: int, band_fraction: float, bands: Sequence[int] | None
) -> np.ndarray:
    """Bands a structured noise hits: the given ones, or floor(band_fraction * C) random distinct bands."""
    if bands is not None:
        picked = np.asarray(bands, dtype=np.int64).ravel()
        if picked.size and (picked.min() < 0 or picked.max() >= num_bands):
            raise OptionError(f"band index outside 0..{num_bands - 1}")
        return picked
    frac = float(band_fraction)
    if not 0.0 <= frac <= 1.0:
        raise OptionError(f"band_fraction must be in [0, 1], got {frac}")
    count = int(math.floor(frac * num_bands + 1e-9))
    return rng.permutation(num_bands)[:count]


def _sigma_tuple(sigmas: float | Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(s) for s in np.atleast_1d(np.asarray(sigmas, dtype=np.float64)))
    if not values or min(values) < 0:
        raise OptionError("noise sigmas must be a non-empty list of values >= 0")
    return values


# --------------------------------------------------------------------------------------------------
# noise


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Add i.i.d. Gaussian noise with the same ``sigma`` (data units, e.g. 50/255) in every band."""
    x = _cube(x)
    if sigma < 0:
        raise OptionError(f"sigma must be >= 0, got {sigma}")
    return (x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)).astype(np.float32)


def noniid_gaussian_noise(
    x: np.ndarray, rng: np.random.Generator, sigmas: Sequence[float] = DEFAULT_SIGMAS
) -> np.ndarray:
    """Add Gaussian noise whose sigma each band draws (uniformly, independently) from ``sigmas``."""
    x = _cube(x)
    choices = np.asarray(_sigma_tuple(sigmas), dtype=np.float32)
    per_band = rng.choice(choices, size=x.shape[0])
    noise = rng.standard_normal(x.shape, dtype=np.float32) * per_band[:, None, None].astype(np.float32)
    return (x + noise).astype(np.float32)


def stripe_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    band_fraction: float = 1 / 3,
    min_frac: float = 0.05,
    max_frac: float = 0.15,
    amplitude: float = 0.25,
    bands: Sequence[int] | None = None,
) -> np.ndarray:
    """Stripes: on each hit band, an integer count in [floor(min_frac*W), floor(max_frac*W)) of random columns
    each get a constant uniform(-amplitude, amplitude) value subtracted (HSDT's complex-noise recipe).

    ``bands`` overrides the random choice of floor(band_fraction * C) bands.
    """
    x = _cube(x)
    out = x.copy()
    width = x.shape[2]
    hit = _pick_bands(rng, x.shape[0], band_fraction, bands)
    low, high = int(math.floor(min_frac * width)), int(math.floor(max_frac * width))
    counts = rng.integers(low, max(high, low + 1), size=hit.size)
    for band, count in zip(hit, counts):
        cols = rng.permutation(width)[:count]
        offsets = rng.uniform(-amplitude, amplitude, size=cols.size).astype(np.float32)
        out[band][:, cols] -= offsets[None, :]
    return out


def deadline_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    band_fraction: float = 1 / 3,
    min_frac: float = 0.05,
    max_frac: float = 0.15,
    bands: Sequence[int] | None = None,
) -> np.ndarray:
    """Dead lines: on each hit band, an integer count in [ceil(min_frac*W), ceil(max_frac*W)) of random
    columns are set to 0 (HSDT's complex-noise recipe). ``bands`` overrides the random choice of
    floor(band_fraction * C) bands."""
    x = _cube(x)
    out = x.copy()
    width = x.shape[2]
    hit = _pick_bands(rng, x.shape[0], band_fraction, bands)
    low, high = int(math.ceil(min_frac * width)), int(math.ceil(max_frac * width))
    counts = rng.integers(low, max(high, low + 1), size=hit.size)
    for band, count in zip(hit, counts):
        cols = rng.permutation(width)[:count]
        out[band][:, cols] = 0.0
    return out


def impulse_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    band_fraction: float = 1 / 3,
    amounts: Sequence[float] = (0.1, 0.3, 0.5, 0.7),
    bands: Sequence[int] | None = None,
) -> np.ndarray:
    """Salt-and-pepper: each hit band draws an amount from ``amounts``; every pixel is flipped with that
    probability and a flipped pixel becomes 1 (salt) or 0 (pepper) with equal odds (HSDT's complex-noise
    recipe)."""
    x = _cube(x)
    out = x.copy()
    hit = _pick_bands(rng, x.shape[0], band_fraction, bands)
    amount_list = np.asarray(amounts, dtype=np.float64).ravel()
    if amount_list.size == 0 or amount_list.min() < 0 or amount_list.max() > 1:
        raise OptionError("impulse amounts must be a non-empty list of probabilities in [0, 1]")
    for band in hit:
        amount = rng.choice(amount_list)
        flipped = rng.random(x.shape[1:]) < amount
        salted = rng.random(x.shape[1:]) < 0.5
        out[band][flipped & salted] = 1.0
        out[band][flipped & ~salted] = 0.0
    return out


def complex_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    case: str,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    choices: Sequence[str] = ("none", "stripe", "deadline", "impulse"),
) -> np.ndarray:
    """Non-i.i.d. Gaussian noise (per-band sigma from ``sigmas``) plus structured noise, per ``case``:

    - ``"noniid"``: the Gaussian part only;
    - ``"stripe"`` / ``"deadline"`` / ``"impulse"``: plus that noise on floor(C/3) random bands
      (HSDT test sets and MP-HSIR complex cases 1-4);
    - ``"mixture"``: plus stripes, dead lines and impulse on three disjoint random thirds of the bands;
    - ``"random"``: plus one of ``choices`` drawn with equal odds. The default
      ``("none", "stripe", "deadline", "impulse")`` is HSDT's complex training recipe (which cycles through
      these four sample by sample; here they are drawn at random); pass
      ``("stripe", "deadline", "impulse")`` for MP-HSIR's task-2 training recipe.
    """
    if case not in COMPLEX_CASES:
        raise OptionError(f"unknown complex-noise case {case!r}; valid: {', '.join(COMPLEX_CASES)}")
    out = noniid_gaussian_noise(x, rng, sigmas)
    if case == "random":
        options = tuple(choices)
        bad = [c for c in options if c not in ("none", "stripe", "deadline", "impulse")]
        if not options or bad:
            raise OptionError("random complex-noise choices must be among: none, stripe, deadline, impulse")
        case = str(options[int(rng.integers(len(options)))])
    if case == "stripe":
        out = stripe_noise(out, rng)
    elif case == "deadline":
        out = deadline_noise(out, rng)
    elif case == "impulse":
        out = impulse_noise(out, rng)
    elif case == "mixture":
        num = out.shape[0]
        third = int(math.floor(num / 3 + 1e-9))
        order = rng.permutation(num)
        # QRNN3D/HSDT order: stripe, deadline, impulse on consecutive slices of one permutation
        out = stripe_noise(out, rng, bands=order[:third])
        out = deadline_noise(out, rng, bands=order[third : 2 * third])
        out = impulse_noise(out, rng, bands=order[2 * third : 3 * third])
    return out


def poisson_noise(x: np.ndarray, rng: np.random.Generator, peak: float = 10.0) -> np.ndarray:
    """Poisson (shot) noise: x' = Poisson(peak * max(x, 0)) / peak (MP-HSIR task 9)."""
    x = _cube(x)
    if peak <= 0:
        raise OptionError(f"poisson peak must be > 0, got {peak}")
    counts = rng.poisson(float(peak) * np.maximum(x, 0.0).astype(np.float64))
    return (counts / float(peak)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# blur and resampling


def gaussian_kernel(kernel_size: int, sigma: float | None = None) -> np.ndarray:
    """Normalised 2-D Gaussian kernel (k, k); default sigma 0.3*((k-1)/2 - 1) + 0.8 (OpenCV's rule)."""
    k = int(kernel_size)
    if k != kernel_size or k < 1 or k % 2 == 0:
        raise OptionError(f"kernel_size must be an odd integer >= 1, got {kernel_size}")
    if sigma is None:
        sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8
    if sigma <= 0:
        raise OptionError(f"blur sigma must be > 0, got {sigma}")
    offsets = np.arange(k, dtype=np.float64) - (k - 1) / 2
    g = np.exp(-(offsets**2) / (2.0 * float(sigma) ** 2))
    g /= g.sum()
    return np.outer(g, g)


def gaussian_blur(x: np.ndarray, kernel_size: int, sigma: float | None = None) -> np.ndarray:
    """Blur every band with the same Gaussian kernel (see :func:`gaussian_kernel`); zero padding, same size."""
    x = _cube(x)
    kernel = gaussian_kernel(kernel_size, sigma)
    return ndimage.correlate(x, kernel[None].astype(np.float32), mode="constant", cval=0.0).astype(np.float32)


def motion_kernel(length: int = 15, angle: float = 45.0) -> np.ndarray:
    """Normalised (length, length) line kernel: a horizontal line through the centre rotated by ``angle``
    degrees counter-clockwise (as displayed, row 0 at the top, like OpenCV's rotation), bilinear."""
    n = int(length)
    if n != length or n < 1:
        raise OptionError(f"motion-blur length must be an integer >= 1, got {length}")
    kernel = np.zeros((n, n), dtype=np.float64)
    kernel[(n - 1) // 2, :] = 1.0
    kernel = ndimage.rotate(kernel, float(angle), reshape=False, order=1, mode="constant", cval=0.0)
    kernel = np.clip(kernel, 0.0, None)
    total = kernel.sum()
    if total <= 0:  # cannot happen for a line through the centre, but keep the kernel valid
        kernel[(n - 1) // 2, (n - 1) // 2] = total = 1.0
    return kernel / total


def motion_blur(x: np.ndarray, length: int = 15, angle: float = 45.0) -> np.ndarray:
    """Linear motion blur of every band (MP-HSIR task 8); zero padding, same size."""
    x = _cube(x)
    kernel = motion_kernel(length, angle)
    # correlation, like OpenCV's filter2D used by the reference
    return ndimage.correlate(x, kernel[None].astype(np.float32), mode="constant", cval=0.0).astype(np.float32)


def _crop_to_multiple(x: np.ndarray, scale: int) -> np.ndarray:
    h, w = (x.shape[1] // scale) * scale, (x.shape[2] // scale) * scale
    if h == 0 or w == 0:
        raise OptionError(f"cube of {x.shape[1]}x{x.shape[2]} pixels is smaller than the scale {scale}")
    return x[:, :h, :w]


def downsample(x: np.ndarray, scale: int, method: str = "bicubic", sigma: float | None = None) -> np.ndarray:
    """Down-sample by an integer ``scale`` to (C, H//scale, W//scale).

    H and W are first cropped to multiples of ``scale`` (the last rows/columns are dropped), so the low-res
    cube corresponds exactly to ``x[:, :H//s*s, :W//s*s]``. Methods:

    - ``"bicubic"``: antialiased bicubic (``torch.nn.functional.interpolate``, ``antialias=True``,
      ``align_corners=False``), close to MATLAB ``imresize`` (ESSAformer / SSPSR protocol);
    - ``"bicubic-noaa"``: MP-HSIR's variant, bicubic with ``align_corners=True`` and no antialiasing;
    - ``"gaussian"``: Gaussian blur with ``sigma`` (default scale / 2, reflect padding so a constant stays
      constant) then decimation keeping every scale-th pixel starting at pixel 0.
    """
    x = _cube(x)
    scale = _check_scale(scale)
    if method not in DOWNSAMPLE_METHODS:
        raise OptionError(f"unknown down-sampling method {method!r}; valid: {', '.join(DOWNSAMPLE_METHODS)}")
    x = _crop_to_multiple(x, scale)
    if scale == 1:
        return x.copy()
    size = (x.shape[1] // scale, x.shape[2] // scale)
    if method == "gaussian":
        s = scale / 2.0 if sigma is None else float(sigma)
        if s <= 0:
            raise OptionError(f"gaussian down-sampling sigma must be > 0, got {s}")
        blurred = ndimage.gaussian_filter(x, sigma=(0.0, s, s), mode="reflect")
        return np.ascontiguousarray(blurred[:, ::scale, ::scale], dtype=np.float32)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    if method == "bicubic":
        y = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True)
    else:
        y = F.interpolate(t, size=size, mode="bicubic", align_corners=True, antialias=False)
    return y[0].numpy().astype(np.float32, copy=True)


def nearest_upsample(x: np.ndarray, scale: int) -> np.ndarray:
    """Replicate every pixel into a scale x scale block: (C, H, W) -> (C, s*H, s*W) (MP-HSIR SR input)."""
    x = _cube(x)
    scale = _check_scale(scale)
    return np.repeat(np.repeat(x, scale, axis=1), scale, axis=2).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# missing data


def pixel_mask(x: np.ndarray, rng: np.random.Generator, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Inpainting input: every voxel (band, row, col) is missing with probability ``ratio`` and set to 0.

    Returns ``(masked cube, mask)`` with mask a bool (C, H, W) array, True = missing.
    """
    x = _cube(x)
    ratio = _check_ratio(ratio, "missing ratio")
    mask = rng.random(x.shape) < ratio
    return np.where(mask, np.float32(0.0), x).astype(np.float32), mask


def band_mask(x: np.ndarray, rng: np.random.Generator, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Band completion input: floor(ratio * C) distinct random bands are set to 0 (MP-HSIR task 7).

    Returns ``(masked cube, mask)`` with mask a bool (C, H, W) array, True on the zeroed bands; the task is
    scored only on those bands.
    """
    x = _cube(x)
    ratio = _check_ratio(ratio, "band-missing ratio")
    count = int(math.floor(ratio * x.shape[0] + 1e-9))  # 1e-9: 0.29 * 100 must give 29, not 28
    bands = rng.permutation(x.shape[0])[:count]
    mask = np.zeros(x.shape, dtype=bool)
    mask[bands] = True
    return np.where(mask, np.float32(0.0), x).astype(np.float32), mask


# --------------------------------------------------------------------------------------------------
# haze


def smooth_random_field(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 4) -> np.ndarray:
    """Smooth random (H, W) field in [0, 1]: a sum of Gaussian-blurred white-noise octaves (coarse ones
    weighted most), min-max normalised. Used as a stand-in for real cirrus-band maps."""
    h, w = int(shape[0]), int(shape[1])
    total = np.zeros((h, w), dtype=np.float64)
    for octave in range(int(octaves)):
        sigma = max(h, w) / 2.0 ** (octave + 2)
        layer = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(sigma, 0.5), mode="wrap")
        std = layer.std()
        if std > 0:
            total += 0.5**octave * layer / std
    span = total.max() - total.min()
    if span <= 0:
        return np.full((h, w), 0.5, dtype=np.float32)
    return ((total - total.min()) / span).astype(np.float32)


def haze(
    x: np.ndarray,
    rng: np.random.Generator,
    omega: float,
    wavelengths: Sequence[float] | None = None,
    gamma: float = 1.0,
    cirrus: np.ndarray | None = None,
) -> np.ndarray:
    """Wavelength-dependent haze (MP-HSIR task 6): hazy = x * t + A * (1 - t).

    t1 = max(1 - omega * cirrus, 1e-10); band b has transmission t1 ** ((400 / lambda_b) ** gamma);
    A_b = mean of the brightest 0.01 % pixels of band b (at least one pixel). ``wavelengths`` (nm) default to
    an even 400-1000 nm grid over the C bands. ``cirrus`` is an (H, W) map in [0, 1], resized bilinearly when
    its size differs. **Substitute:** when ``cirrus`` is None (the real cirrus maps are not published), a
    smooth random field (:func:`smooth_random_field`) drawn from ``rng`` is used instead.
    """
    x = _cube(x)
    c, h, w = x.shape
    if wavelengths is None:
        lam = np.linspace(400.0, 1000.0, c)
    else:
        lam = np.asarray(wavelengths, dtype=np.float64).ravel()
        if lam.size != c or lam.min() <= 0:
            raise OptionError(f"haze needs {c} positive wavelengths (nm), got {lam.size}")
    if cirrus is None:
        field_map = smooth_random_field((h, w), rng).astype(np.float64)
    else:
        field_map = np.asarray(cirrus, dtype=np.float64)
        if field_map.ndim != 2:
            raise OptionError(f"cirrus map must be 2-D (rows, cols), got shape {field_map.shape}")
        if field_map.shape != (h, w):
            # bilinear resize onto the cube's grid (pixel centres aligned, edges clamped)
            rows = (np.arange(h) + 0.5) * field_map.shape[0] / h - 0.5
            cols = (np.arange(w) + 0.5) * field_map.shape[1] / w - 0.5
            grid = np.meshgrid(rows, cols, indexing="ij")
            field_map = ndimage.map_coordinates(field_map, grid, order=1, mode="nearest")
    t1 = np.maximum(1.0 - float(omega) * field_map, 1e-10)
    t = t1[None] ** (((400.0 / lam) ** float(gamma))[:, None, None])
    top = max(1, int(math.floor(h * w * 1e-4)))
    flat = x.reshape(c, -1).astype(np.float64)
    airlight = np.partition(flat, flat.shape[1] - top, axis=1)[:, -top:].mean(axis=1)
    hazy = x * t + airlight[:, None, None] * (1.0 - t)
    return hazy.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# composable layer


@dataclass
class Degradation:
    """One named degradation with its parameters (missing ones take the registry defaults)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        """CLI form, e.g. ``"gaussian:sigma=30"``; :func:`parse_degradation` reads it back."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in self.params.items())

    def __str__(self) -> str:
        return self.to_text()


@dataclass
class Degraded:
    """Result of :func:`degrade`.

    ``scale`` is the spatial size ratio clean/degraded (the clean reference for ``x`` is
    ``clean[:, :h*scale, :w*scale]``); ``ergas_scale`` is the resolution-loss factor to pass to ERGAS,
    which also counts ``sr-nearest`` steps whose output is at the high-resolution size. ``mask`` is the
    union (True = missing) of the masks of the steps that produced one, else None.
    """

    x: np.ndarray
    mask: np.ndarray | None
    scale: int
    ergas_scale: int = 1


@dataclass(frozen=True)
class DegradationSpec:
    """Registry entry: one-line doc, default parameters, whether it is random, and the function."""

    name: str
    doc: str
    defaults: dict[str, Any]
    random: bool
    # apply(x, rng, params) -> (cube, mask or None, shape scale, resolution scale)
    apply: Callable[[np.ndarray, np.random.Generator, dict[str, Any]], tuple[np.ndarray, np.ndarray | None, int, int]]


def _per255(values: Any) -> tuple[float, ...]:
    return tuple(v / 255.0 for v in _sigma_tuple(values))


def _sr_nearest(x: np.ndarray, scale: int, method: str) -> np.ndarray:
    return nearest_upsample(downsample(x, scale, method), scale)


_SPECS: list[DegradationSpec] = [
    DegradationSpec(
        "gaussian", "i.i.d. Gaussian noise, sigma in 0-255 units, same in all bands", {"sigma": 50}, True,
        lambda x, rng, p: (gaussian_noise(x, rng, float(p["sigma"]) / 255.0), None, 1, 1),
    ),
    DegradationSpec(
        "blind-gaussian", "i.i.d. Gaussian noise, one sigma (0-255) drawn per cube from sigmas",
        {"sigmas": (10, 30, 50, 70)}, True,
        lambda x, rng, p: (gaussian_noise(x, rng, float(rng.choice(_per255(p["sigmas"])))), None, 1, 1),
    ),
    DegradationSpec(
        "noniid", "non-i.i.d. Gaussian noise, each band draws its sigma (0-255) from sigmas",
        {"sigmas": (10, 30, 50, 70)}, True,
        lambda x, rng, p: (complex_noise(x, rng, "noniid", sigmas=_per255(p["sigmas"])), None, 1, 1),
    ),
    DegradationSpec(
        "stripe", "non-i.i.d. Gaussian + stripes on 1/3 of the bands (sigmas=0: stripes only)",
        {"sigmas": (10, 30, 50, 70)}, True,
        lambda x, rng, p: (complex_noise(x, rng, "stripe", sigmas=_per255(p["sigmas"])), None, 1, 1),
    ),
    DegradationSpec(
        "deadline", "non-i.i.d. Gaussian + dead lines on 1/3 of the bands (sigmas=0: dead lines only)",
        {"sigmas": (10, 30, 50, 70)}, True,
        lambda x, rng, p: (complex_noise(x, rng, "deadline", sigmas=_per255(p["sigmas"])), None, 1, 1),
    ),
    DegradationSpec(
        "impulse", "non-i.i.d. Gaussian + salt-and-pepper on 1/3 of the bands (sigmas=0: impulse only)",
        {"sigmas": (10, 30, 50, 70)}, True,
        lambda x, rng, p: (complex_noise(x, rng, "impulse", sigmas=_per255(p["sigmas"])), None, 1, 1),
    ),
    DegradationSpec(
        "mixture", "non-i.i.d. Gaussian + stripes, dead lines, impulse on three disjoint thirds of the bands",
        {"sigmas": (10, 30, 50, 70)}, True,
        lambda x, rng, p: (complex_noise(x, rng, "mixture", sigmas=_per255(p["sigmas"])), None, 1, 1),
    ),
    DegradationSpec(
        "complex", "non-i.i.d. Gaussian + one random choice of none/stripe/deadline/impulse (training)",
        {"sigmas": (10, 30, 50, 70), "choices": ("none", "stripe", "deadline", "impulse")}, True,
        lambda x, rng, p: (
            complex_noise(x, rng, "random", sigmas=_per255(p["sigmas"]), choices=_str_tuple(p["choices"])),
            None, 1, 1,
        ),
    ),
    DegradationSpec(
        "poisson", "Poisson noise, x' = Poisson(peak * x) / peak", {"peak": 10.0}, True,
        lambda x, rng, p: (poisson_noise(x, rng, float(p["peak"])), None, 1, 1),
    ),
    DegradationSpec(
        "blur", "Gaussian blur per band, odd kernel_size, sigma none = OpenCV rule, zero padding",
        {"kernel_size": 9, "sigma": None}, False,
        lambda x, rng, p: (gaussian_blur(x, int(p["kernel_size"]), p["sigma"]), None, 1, 1),
    ),
    DegradationSpec(
        "motion-blur", "linear motion blur, line of given length rotated by angle degrees, zero padding",
        {"length": 15, "angle": 45.0}, False,
        lambda x, rng, p: (motion_blur(x, int(p["length"]), float(p["angle"])), None, 1, 1),
    ),
    DegradationSpec(
        "downsample", "down-sample by scale (method bicubic, bicubic-noaa or gaussian)",
        {"scale": 4, "method": "bicubic"}, False,
        lambda x, rng, p: (downsample(x, int(p["scale"]), str(p["method"])), None, int(p["scale"]), int(p["scale"])),
    ),
    DegradationSpec(
        "sr-nearest", "MP-HSIR SR input: down-sample by scale, then nearest-replicate back to full size",
        {"scale": 4, "method": "bicubic-noaa"}, False,
        lambda x, rng, p: (_sr_nearest(x, int(p["scale"]), str(p["method"])), None, 1, int(p["scale"])),
    ),
    DegradationSpec(
        "inpaint", "inpainting: each voxel missing (set to 0) with probability ratio", {"ratio": 0.8}, True,
        lambda x, rng, p: (*pixel_mask(x, rng, float(p["ratio"])), 1, 1),
    ),
    DegradationSpec(
        "band-missing", "band completion: floor(ratio * C) random bands set to 0", {"ratio": 0.2}, True,
        lambda x, rng, p: (*band_mask(x, rng, float(p["ratio"])), 1, 1),
    ),
    DegradationSpec(
        "haze", "wavelength-dependent haze of strength omega (random smooth cirrus field unless given)",
        {"omega": 0.75, "gamma": 1.0, "wavelengths": None, "cirrus": None}, True,
        lambda x, rng, p: (
            haze(x, rng, float(p["omega"]), p["wavelengths"], float(p["gamma"]), p["cirrus"]), None, 1, 1,
        ),
    ),
]

DEGRADATIONS: dict[str, DegradationSpec] = {spec.name: spec for spec in _SPECS}


def list_degradations() -> list[tuple[str, str]]:
    """(name, one-line doc) of every registered degradation, in registry order."""
    return [(spec.name, spec.doc) for spec in DEGRADATIONS.values()]


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "|".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse_scalar(text: str) -> Any:
    low = text.strip().lower()
    if low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return float(low)
    except ValueError:
        return text.strip()


def _parse_value(text: str) -> Any:
    if "|" in text:
        return tuple(_parse_scalar(part) for part in text.split("|"))
    return _parse_scalar(text)


def _check_known(name: str) -> DegradationSpec:
    spec = DEGRADATIONS.get(name)
    if spec is None:
        raise OptionError(f"unknown degradation {name!r}; valid: {', '.join(DEGRADATIONS)}")
    return spec


def parse_degradation(text: str) -> Degradation:
    """Parse ``"name"`` or ``"name:key=value,key=value"`` (lists as ``a|b|c``), e.g. ``"gaussian:sigma=30"``.

    Unknown names or parameters raise :class:`~hsikit.errors.OptionError` listing the valid ones.
    """
    text = text.strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    spec = _check_known(name)
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not value.strip():
            raise OptionError(f"degradation parameter {item!r} must look like key=value")
        if key not in spec.defaults:
            valid = ", ".join(spec.defaults) or "none"
            raise OptionError(f"unknown parameter {key!r} for degradation {name!r}; valid: {valid}")
        params[key] = _parse_value(value)
    return Degradation(name, params)


def parse_degradations(text: str) -> list[Degradation]:
    """Parse a ``+``-separated chain applied left to right, e.g. ``"blur:kernel_size=9+gaussian:sigma=10"``."""
    parts = [part for part in (p.strip() for p in text.split("+")) if part]
    if not parts:
        raise OptionError(f"no degradation given; valid: {', '.join(DEGRADATIONS)}")
    return [parse_degradation(part) for part in parts]


def degrade(
    x: np.ndarray,
    degradations: Degradation | str | Sequence[Degradation | str],
    seed_or_rng: int | np.random.Generator | None = None,
) -> Degraded:
    """Apply one degradation or a list of them in order (e.g. blur then noise) to a (C, H, W) cube.

    Strings are parsed with :func:`parse_degradation`. ``seed_or_rng`` is an int seed, a Generator, or None
    (fresh entropy). Masks of the steps are combined (True = missing); a step that changes the spatial size
    after a mask was produced raises OptionError (put masks last).
    """
    cube = _cube(x).copy()
    items = [degradations] if isinstance(degradations, (Degradation, str)) else list(degradations)
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    mask: np.ndarray | None = None
    scale = ergas_scale = 1
    for item in items:
        deg = parse_degradation(item) if isinstance(item, str) else item
        spec = _check_known(deg.name)
        unknown = [k for k in deg.params if k not in spec.defaults]
        if unknown:
            raise OptionError(
                f"unknown parameter {unknown[0]!r} for degradation {deg.name!r}; valid: {', '.join(spec.defaults)}"
            )
        cube, step_mask, step_scale, step_res = spec.apply(cube, rng, {**spec.defaults, **deg.params})
        if mask is not None and cube.shape != mask.shape:
            raise OptionError(f"degradation {deg.name!r} changes the size after a masking step; put masks last")
        if step_mask is not None:
            mask = step_mask if mask is None else (mask | step_mask)
        scale *= step_scale
        ergas_scale *= step_res
    return Degraded(cube.astype(np.float32, copy=False), mask, scale, ergas_scale)
