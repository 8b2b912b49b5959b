"""Preprocessing chains: steps + parameters as plain data, fitted once, stored in checkpoints, replayed exactly.

Every step is per-pixel, so applying a chain to tiles equals applying it to the whole scene. ``fit`` resolves
everything that depends on the scene (band indices, scale factors, statistics, PCA axes) into the step
parameters, so replaying a fitted chain never looks at the new scene's flags or statistics. Fitted numbers are
kept to float32 precision (the precision data are processed in), so the serialised chain is short and replays
exactly what was fitted.

Ops (params before fit -> after fit):
- ``select_bands`` {indices}
- ``drop_bad_bands`` {windows} -> + {indices}: keep bands neither flagged bad nor inside the windows (nm)
- ``wavelength_range`` {min, max} -> + {indices}
- ``scale`` {factor?} -> {scale, offset}: physical = stored * scale + offset (default: the file's own)
- ``resample`` {sensor | centers+fwhm+names} -> + {names, centers, fwhm, input_wavelengths, input_fwhm}: Gaussian
  SRF resampling; the matrix is rebuilt from these when applied (older chains carry it as ``matrix``)
- ``normalize`` {} -> {mean, std}: z-score with statistics of the (already transformed) scene
- ``pca`` {n_components} -> + {mean, components}
- ``fill_invalid`` {value=0}: invalid pixels set to ``value`` (the neutral value after normalisation)
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsikit.errors import BandMismatchError, OptionError
from hsikit.io.bandinfo import BandInfo
from hsikit.io.scene import Scene
from hsikit.preprocess.bands import WATER_VAPOUR_WINDOWS, good_band_indices, select_by_wavelength

OPS = ("select_bands", "drop_bad_bands", "wavelength_range", "scale", "resample", "normalize", "pca", "fill_invalid")
_STD_FLOOR = 1e-6


#: parameters whose presence marks a step as fitted (any one of them)
_FITTED_BY = {"drop_bad_bands": ("indices",), "wavelength_range": ("indices",), "scale": ("scale",),
              "resample": ("input_wavelengths", "matrix"), "normalize": ("mean",), "pca": ("components",)}


@dataclass
class Step:
    op: str
    params: dict[str, Any] = field(default_factory=dict)
    #: the resampling matrix rebuilt from ``params`` (never serialised)
    _matrix: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise OptionError(f"unknown preprocessing step {self.op!r}; known: {', '.join(OPS)}")

    @property
    def fitted(self) -> bool:
        need = _FITTED_BY.get(self.op)
        return need is None or any(k in self.params for k in need)

    def resample_matrix(self) -> np.ndarray:
        """float32 weights (bands out, bands in) of a fitted ``resample`` step: its stored ``matrix`` (older
        chains) or rebuilt from the input and target bands it was fitted on, once."""
        if self._matrix is None:
            from hsikit.preprocess.resample import resampling_matrix

            p = self.params
            if "matrix" in p:
                m = p["matrix"]
            else:  # the target bands were chosen for their coverage at fit time: no second check
                m = resampling_matrix(p["input_wavelengths"], p.get("input_fwhm"), p["centers"], p["fwhm"],
                                      min_coverage=0.0)
            self._matrix = np.asarray(m, np.float32)
        return self._matrix


@dataclass
class Chain:
    steps: list[Step] = field(default_factory=list)
    #: bands of the scene the chain was fitted on: {"count", "wavelengths", "names", "fwhm"}
    input_bands: dict[str, Any] | None = None

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_options(
        cls,
        *,
        drop_bad_bands: bool = False,
        bad_band_windows: Any = WATER_VAPOUR_WINDOWS,
        wavelength_range: tuple[float, float] | None = None,
        bands: list[int] | None = None,
        scale: float | bool | None = None,
        resample_to: str | None = None,
        normalize: bool = False,
        pca: int | None = None,
        pca_whiten: bool = False,
        fill_invalid: bool = True,
    ) -> "Chain":
        """The usual chain from CLI-style options, in a fixed sensible order.

        ``scale``: a factor, True for the file's own scale/offset, None to apply the file's scale when it has one.
        """
        steps: list[Step] = []
        if bands is not None:
            steps.append(Step("select_bands", {"indices": [int(i) for i in bands]}))
        if drop_bad_bands:
            steps.append(Step("drop_bad_bands", {"windows": [list(w) for w in (bad_band_windows or [])]}))
        if wavelength_range is not None:
            steps.append(Step("wavelength_range", {"min": float(wavelength_range[0]), "max": float(wavelength_range[1])}))
        if scale is not False:
            steps.append(Step("scale", {} if scale in (None, True) else {"factor": float(scale)}))
        if resample_to:
            steps.append(Step("resample", {"sensor": resample_to}))
        if normalize:
            steps.append(Step("normalize"))
        if pca:
            steps.append(Step("pca", {"n_components": int(pca), "whiten": bool(pca_whiten)}))
        if fill_invalid:
            steps.append(Step("fill_invalid", {"value": 0.0}))
        return cls(steps)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [{"op": s.op, "params": _jsonable(s.params)} for s in self.steps],
                "input_bands": _jsonable(self.input_bands)}

    def to_json(self) -> str:
        """The chain as compact JSON with every float at float32 precision (for tags and files)."""
        return json.dumps(float32_precision(self.to_dict()), separators=(",", ":"))

    def summary(self, max_chars: int = 120) -> dict[str, Any]:
        """What the chain does, for where the full chain is too long to show: every step with its parameters of
        at most ``max_chars`` characters of JSON (names, sensor, component count; no statistics), and the input
        band count and wavelength range. Not replayable."""
        steps = []
        for s in self.steps:
            params = float32_precision(_jsonable(s.params))
            small = {k: v for k, v in params.items() if len(json.dumps(v)) <= max_chars}
            steps.append({"op": s.op, "params": small})
        out: dict[str, Any] = {"summary": True, "steps": steps}
        if self.input_bands:
            wl = self.input_bands.get("wavelengths")
            out["input_bands"] = {"count": self.input_bands.get("count"),
                                  "wavelength_range": float32_precision([min(wl), max(wl)]) if wl else None}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Chain":
        if not d:
            return cls([])
        try:
            return cls([Step(s["op"], dict(s.get("params") or {})) for s in d.get("steps", [])], d.get("input_bands"))
        except (KeyError, TypeError) as e:
            raise OptionError(f"malformed preprocessing chain: {e}") from None

    @property
    def fitted(self) -> bool:
        return self.input_bands is not None and all(s.fitted for s in self.steps)

    # -- fitting -----------------------------------------------------------------------------------------------
    def fit(self, scene: Scene, *, block: int = 512, refit: bool = False) -> "Chain":
        """A new chain with every scene-dependent parameter resolved; statistics are streamed over windows.

        Steps already fitted keep their parameters unless ``refit``.
        """
        from hsikit.preprocess.pca import streaming_pca
        from hsikit.preprocess.stats import band_statistics

        bands = scene.bands
        done: list[Step] = []
        for step in self.steps:
            p = dict(step.params)
            if refit or not step.fitted:
                prefix = Chain(list(done))
                tf = prefix.apply if done else _as_float
                if step.op == "drop_bad_bands":
                    p["indices"] = good_band_indices(bands, p.get("windows") or None)
                elif step.op == "wavelength_range":
                    p["indices"] = select_by_wavelength(bands, p["min"], p["max"])
                elif step.op == "scale":
                    p.update(_scale_params(bands, p.get("factor")))
                elif step.op == "resample":
                    p.pop("matrix", None)
                    p.update(_resample_params(bands, p))
                elif step.op == "normalize":
                    st = band_statistics(scene, block=block, transform=tf)
                    p["mean"] = st.mean.tolist()
                    p["std"] = np.maximum(st.std, _STD_FLOOR).tolist()
                elif step.op == "pca":
                    m = streaming_pca(scene, int(p["n_components"]), block=block, transform=tf)
                    p["mean"] = m.mean.tolist()
                    p["components"] = m.components.tolist()
                    p["explained_variance_ratio"] = m.explained_variance_ratio.tolist()
                    p["explained_variance"] = m.explained_variance.tolist()
                p = float32_precision(p)
            new = Step(step.op, p)
            done.append(new)
            bands = _step_bands(new, bands)
        inb = (self.input_bands if (self.input_bands is not None and not refit)
               else float32_precision(_band_summary(scene.bands)))
        return Chain(done, inb)

    # -- application -------------------------------------------------------------------------------------------
    def apply(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Apply the fitted chain to ``raw`` (B, h, w) in the scene's dtype; returns float32 (B', h, w)."""
        x = np.asarray(raw)
        gain = bias = None  # consecutive per-band affine steps (scale, normalize) fused into one pass

        def flush(x):
            nonlocal gain, bias
            if gain is not None:
                # astype then in place: a multiply casting on the fly was up to 7x slower (buffered casts)
                x = x.astype(np.float32) if (x.dtype != np.float32 or x is raw) else x
                x *= gain.astype(np.float32)[:, None, None]
                x += bias.astype(np.float32)[:, None, None]
                gain = bias = None
            return x

        for step in self.steps:
            if not step.fitted:
                raise OptionError(f"preprocessing step {step.op!r} is not fitted; call Chain.fit(scene) first")
            p = step.params
            if step.op in ("select_bands", "drop_bad_bands", "wavelength_range"):
                x = flush(x)[p["indices"]]  # before the float conversion when it comes first: less to copy
                continue
            if step.op in ("scale", "normalize"):
                a, b = ((np.asarray(p["scale"], np.float64), np.asarray(p["offset"], np.float64)) if step.op == "scale"
                        else (1 / np.asarray(p["std"], np.float64), -np.asarray(p["mean"], np.float64) / np.asarray(p["std"], np.float64)))
                gain, bias = (a, b) if gain is None else (gain * a, bias * a + b)
                continue
            x = flush(x)
            if x.dtype != np.float32 or x is raw:
                x = x.astype(np.float32)  # a private copy: the steps below work in place
            if step.op == "resample":
                x = np.tensordot(step.resample_matrix(), x, axes=1)
            elif step.op == "pca":
                x -= np.asarray(p["mean"], np.float32)[:, None, None]
                comp = np.asarray(p["components"], np.float64)
                if p.get("whiten"):  # unit variance per component (MorpMamba's recipe)
                    comp = comp / np.sqrt(np.maximum(np.asarray(p["explained_variance"], np.float64), 1e-12))[:, None]
                x = np.tensordot(comp.astype(np.float32), x, axes=1)
            elif step.op == "fill_invalid" and valid is not None:
                x[:, ~valid] = np.float32(p.get("value", 0.0))
        x = flush(x)
        if x.dtype != np.float32 or x is raw:
            x = x.astype(np.float32)
        if valid is not None and not np.isfinite(x).all():
            x[~np.isfinite(x)] = 0.0
        return np.ascontiguousarray(x)

    def apply_scene(self, scene: Scene, *, block: int = 512) -> np.ndarray:
        """The whole of ``scene`` through the fitted chain, read ``block`` px windows at a time: float32
        (B', H, W), invalid pixels 0. For training sets, which are held in memory."""
        from hsikit.windows import iter_windows

        x = np.zeros((self.output_bands(scene.bands).count, scene.height, scene.width), dtype=np.float32)
        for w in iter_windows(scene.width, scene.height, block):
            r0, c0, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
            raw = scene.read(w)
            x[:, r0 : r0 + h, c0 : c0 + wd] = self.apply(raw, scene.read_valid(w, raw))
        return x

    def used_input_bands(self, count: int) -> list[int]:
        """0-based indices of the input bands that reach the model (after every band selection)."""
        idx = list(range(count))
        for step in self.steps:
            if step.op in ("select_bands", "drop_bad_bands", "wavelength_range") and "indices" in step.params:
                idx = [idx[i] for i in step.params["indices"]]
        return idx

    def output_bands(self, bands: BandInfo) -> BandInfo:
        """Band metadata after the chain (names/wavelengths follow selections; resample and PCA rename)."""
        for step in self.steps:
            bands = _step_bands(step, bands)
        return bands

    def check_input(self, bands: BandInfo, *, source: str | None = None) -> None:
        """Raise BandMismatchError when ``bands`` differ from those the chain was fitted on; warn when the scene
        (named ``source``) has no wavelengths to compare with the chain's."""
        ref = self.input_bands
        if not ref:
            return
        want, have = int(ref["count"]), bands.count
        if want != have:
            raise BandMismatchError(
                f"model expects {want} bands{_range(ref.get('wavelengths'))}, scene has {have} bands"
                f"{_range(bands.wavelengths)}"
            )
        wl = ref.get("wavelengths")
        if wl and bands.wavelengths is None:
            # e.g. a .mat benchmark cube: same band count, but nothing says the bands are the same
            warnings.warn(f"{source or 'the scene'} has no wavelengths: hsikit cannot check that its {have} bands are "
                          f"the model's{_range(wl)}; the results are wrong if they are not", stacklevel=2)
        if wl is not None and bands.wavelengths is not None:
            fw = ref.get("fwhm") or [0.0] * want
            tol = np.maximum(1.0, 0.25 * np.asarray(fw))
            diff = np.abs(np.asarray(wl) - np.asarray(bands.wavelengths))
            if (diff > tol).any():
                i = int(np.argmax(diff - tol))
                raise BandMismatchError(
                    f"model expects band {i + 1} at {wl[i]:.1f} nm, scene has it at {bands.wavelengths[i]:.1f} nm "
                    f"({int((diff > tol).sum())} bands differ by more than the tolerance)"
                )


# -- helpers -------------------------------------------------------------------------------------------------------
def _as_float(raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    return np.asarray(raw, dtype=np.float32)


def _range(wl) -> str:
    return f" ({min(wl):.0f}-{max(wl):.0f} nm)" if wl else ""


def _band_summary(b: BandInfo) -> dict[str, Any]:
    return {"count": b.count, "names": list(b.names),
            "wavelengths": None if b.wavelengths is None else list(b.wavelengths),
            "fwhm": None if b.fwhm is None else list(b.fwhm)}


def _scale_params(bands: BandInfo, factor: float | None) -> dict[str, Any]:
    n = bands.count
    if factor is not None:
        return {"factor": float(factor), "scale": [float(factor)] * n, "offset": [0.0] * n}
    scale = list(bands.scale) if bands.scale is not None else [1.0] * n
    offset = list(bands.offset) if bands.offset is not None else [0.0] * n
    return {"scale": scale, "offset": offset}


def _resample_params(bands: BandInfo, p: dict[str, Any]) -> dict[str, Any]:
    from hsikit.preprocess.resample import target_coverage
    from hsikit.preprocess.sensors import get_sensor

    if bands.wavelengths is None:
        raise BandMismatchError("spectral resampling needs band wavelengths, and the scene has none")
    if "sensor" in p:
        s = get_sensor(p["sensor"])
        names, centers, fwhm = list(s.bands), list(s.centers), list(s.fwhm)
    else:
        centers, fwhm = list(p["centers"]), list(p["fwhm"])
        names = list(p.get("names") or [f"R{i + 1}" for i in range(len(centers))])
    cov = target_coverage(bands.wavelengths, bands.fwhm, centers, fwhm)
    keep = [i for i, c in enumerate(cov) if c >= 0.9]
    if not keep:
        raise BandMismatchError("no target band is covered by the scene's bands")
    if len(keep) < len(names):
        dropped = [names[i] for i in range(len(names)) if i not in keep]
        warnings.warn(f"resampling: target band(s) {', '.join(dropped)} not covered by the scene's bands; left out",
                      stacklevel=3)
    names, centers, fwhm = [names[i] for i in keep], [centers[i] for i in keep], [fwhm[i] for i in keep]
    return {"names": names, "centers": centers, "fwhm": fwhm, "input_wavelengths": list(bands.wavelengths),
            "input_fwhm": None if bands.fwhm is None else list(bands.fwhm)}


def _step_bands(step: Step, bands: BandInfo) -> BandInfo:
    p = step.params
    if step.op in ("select_bands", "drop_bad_bands", "wavelength_range") and "indices" in p:
        return bands.subset(p["indices"])
    if step.op == "scale" and "scale" in p:
        return BandInfo(bands.names, bands.wavelengths, bands.fwhm, bands.bad, None, None, bands.wavelength_units)
    if step.op == "resample" and step.fitted:
        return BandInfo(tuple(p["names"]), tuple(p["centers"]), tuple(p["fwhm"]), wavelength_units="nm")
    if step.op == "pca" and "components" in p:
        return BandInfo(tuple(f"PC{i + 1}" for i in range(len(p["components"]))))
    return bands


def float32_precision(v: Any) -> Any:
    """``v`` (plain data) with every float rounded to the shortest decimal that reads back as the same float32,
    e.g. 0.30000001192 -> 0.3, 6.5e-320 -> 0.0; ints, strings and non-finite or out-of-range floats unchanged."""
    if isinstance(v, dict):
        return {k: float32_precision(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [float32_precision(x) for x in v]
    if isinstance(v, (np.ndarray, np.generic)):
        return float32_precision(v.tolist())
    if isinstance(v, float) and math.isfinite(v) and abs(v) <= _FLOAT32_MAX:
        return float(str(np.float32(v)))
    return v


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
