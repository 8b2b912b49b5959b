"""The restoration tasks of all-in-one models and how each is synthesised for training, following MP-HSIR's
protocol (Wu et al. 2025; all degradations on [0, 1] band-first cubes, remote-sensing training levels).

Training draws the degradation level of every sample at random from the paper's set; evaluation uses named
degradations (:func:`hsikit.restoration.degradations.parse_degradation`) at fixed levels instead.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hsikit.errors import OptionError
from hsikit.restoration import degradations as D

TASKS = ("gaussian", "complex", "blur", "sr", "inpaint", "haze", "band-missing")
#: all-in-one SR inputs are nearest-upsampled back to the target size, so crops must divide by the largest scale
SR_SCALES = (2, 4, 8)


def task_sampler(task: str, wavelengths: Sequence[float] | None = None) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """``f(clean, rng) -> degraded`` (same shape) drawing this task's training level (remote-sensing settings)."""
    if task == "gaussian":
        return lambda x, rng: D.gaussian_noise(x, rng, sigma=float(rng.uniform(30, 70)) / 255.0)
    if task == "complex":
        return lambda x, rng: D.complex_noise(x, rng, case="random", choices=("stripe", "deadline", "impulse"))
    if task == "blur":
        return lambda x, rng: D.gaussian_blur(x, kernel_size=int(rng.choice([7, 11, 15])))
    if task == "sr":
        def sr(x, rng):
            s = int(rng.choice(SR_SCALES))
            return D.nearest_upsample(D.downsample(x, s, method="bicubic-noaa"), s)
        return sr
    if task == "inpaint":
        return lambda x, rng: D.pixel_mask(x, rng, ratio=float(rng.choice([0.7, 0.8, 0.9])))[0]
    if task == "haze":
        wl = None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
        return lambda x, rng: D.haze(x, rng, omega=float(rng.choice([0.5, 0.75, 1.0])), wavelengths=wl)
    if task == "band-missing":
        return lambda x, rng: D.band_mask(x, rng, ratio=float(rng.choice([0.1, 0.2, 0.3])))[0]
    raise OptionError(f"unknown restoration task {task!r}; known: {', '.join(TASKS)}")


#: the named degradation (evaluation) that matches each task at the paper's middle test level
TASK_TEST_DEGRADATION = {
    "gaussian": "gaussian:sigma=50",
    "complex": "mixture",
    "blur": "blur:kernel_size=11",
    "sr": "sr-nearest:scale=4",
    "inpaint": "inpaint:ratio=0.8",
    "haze": "haze:omega=0.75",
    "band-missing": "band-missing:ratio=0.2",
}
