"""Pieces shared by the pipelines: provenance tags, default model lookup, georeferencing checks."""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsikit._version import __version__
from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene
from hsikit.threads import current_threads

#: the model `hsikit classify` uses when no --model is given (the one trained on the embedded sample). sample_data/
#: installs as the package `hsikit.sample_data`, so two folders up from this file holds it in both layouts: the
#: repository root of a source checkout (pipelines/ beside sample_data/) and the `hsikit` folder of an installed
#: wheel (hsikit/pipelines/ beside hsikit/sample_data/).
SAMPLE_MODEL = Path(__file__).resolve().parents[1] / "sample_data" / "sample_model.safetensors"


def is_synthetic_sample(scene: Scene) -> bool:
    """Whether ``scene`` is one of hsikit's synthetic sample scenes (``hsikit.synthetic`` tags them)."""
    return str(scene.tags.get("SENSOR", "")).startswith("hsikit synthetic")


def default_model(scene: Scene | None = None) -> Path:
    """$HSIKIT_DEFAULT_MODEL, else the sample model of a source checkout; warns which model is used and what it
    was trained on. Given a ``scene`` that is not a synthetic sample, the sample model is refused: it was trained
    on synthetic spectra and would give a confident, wrong map of a real scene."""
    env = os.environ.get("HSIKIT_DEFAULT_MODEL")
    if env:
        path = Path(env)
        warnings.warn(f"no --model given: using $HSIKIT_DEFAULT_MODEL {path}{_model_facts(path)}", stacklevel=2)
        return path
    if scene is not None and not is_synthetic_sample(scene):
        raise OptionError(
            f"no --model given: {scene.name} needs a model trained for its sensor (the bundled sample model only "
            "fits hsikit's synthetic sample scene); train one with `hsikit train classifier SCENE --labels LABELS "
            "-o MODEL.safetensors`, convert published weights with `hsikit import-weights`, or set "
            "$HSIKIT_DEFAULT_MODEL"
        )
    if SAMPLE_MODEL.exists():
        facts = _model_facts(SAMPLE_MODEL, "trained on the synthetic sample scene", "pass --model for real scenes")
        warnings.warn(f"no --model given: using the sample model {SAMPLE_MODEL.name}{facts}", stacklevel=2)
        return SAMPLE_MODEL
    raise OptionError(f"no --model given and the sample model {SAMPLE_MODEL} is missing from this installation "
                      "(pass --model or set $HSIKIT_DEFAULT_MODEL)")


def _model_facts(path: Path, trained_on: str | None = None, advice: str | None = None) -> str:
    """What a checkpoint is, for the default-model warning: ``" (freenet trained on ...; 7 classes: water, ...;
    103 bands 400-2484 nm; advice)"``, from its header only (no weights are read). A file that cannot be read gives
    no facts; loading it reports why."""
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.errors import HsikitError

    parts = []
    try:
        meta = read_checkpoint_meta(path)
    except (HsikitError, OSError):
        meta = None
    if meta is not None:
        scene = (meta.provenance or {}).get("scene")
        on = trained_on or (f"trained on {scene}" if scene else None)
        parts.append(f"{meta.arch} {on}" if on else meta.arch)
        names = list(meta.class_names or [])
        if names:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            parts.append(f"{len(names)} classes: {shown}")
        bands = meta.bands or {}
        n = len(bands.get("names") or [])
        wl = bands.get("wavelengths")
        if n:
            parts.append(f"{n} bands" + (f" {min(wl):.0f}-{max(wl):.0f} nm" if wl else ""))
    if advice:
        parts.append(advice)
    return f" ({'; '.join(parts)})" if parts else ""


def check_georeferencing(scene: Scene) -> None:
    """Refuse GCP-only scenes; warn once for scenes with no georeferencing (outputs get none either)."""
    if scene.tags.get("georef") == "gcps":
        raise InputError(
            f"{scene.name} is georeferenced by GCPs/RPCs only; warp it to a map grid first (e.g. gdalwarp) "
            "so outputs can carry a transform"
        )
    if scene.crs is None:
        from hsikit.io.writer import note_no_crs_reported

        warnings.warn(f"{scene.name} has no CRS: outputs are written on its pixel grid without georeferencing", stacklevel=2)
        # the outputs' writers would say it again, once per output
        note_no_crs_reported(scene.width, scene.height, scene.transform)


def provenance_tags(
    *,
    scene: Scene,
    command: str | None,
    model: str | None = None,
    checkpoint_sha256: str | None = None,
    bands_used: list[str] | None = None,
    normalization: str | None = None,
    tile: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Dataset-level provenance tags (``HSIKIT_*`` metadata of the output file): no absolute paths, user or host
    names."""
    tags = {
        "HSIKIT_VERSION": __version__,
        "HSIKIT_INPUT": scene.name,
        "HSIKIT_CREATED": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "HSIKIT_THREADS": str(current_threads()),
    }
    if command:
        tags["HSIKIT_COMMAND"] = command
    if model:
        tags["HSIKIT_MODEL"] = model
    if checkpoint_sha256:
        tags["HSIKIT_CHECKPOINT_SHA256"] = checkpoint_sha256
    if bands_used is not None:
        tags["HSIKIT_BANDS_USED"] = json.dumps(bands_used)
    if normalization:
        tags["HSIKIT_NORMALIZATION"] = normalization
    if tile:
        tags["HSIKIT_TILE"] = json.dumps(tile)
    tags.update(extra or {})
    return tags


def spectral_band_tags(bands) -> list[dict[str, str]]:
    """Per-band metadata items (wavelength, wavelength_units, fwhm, bad_band) for spectral outputs."""
    out = []
    units = bands.wavelength_units or "nm"
    micro = units.lower().startswith("micro")
    for i in range(bands.count):
        t: dict[str, str] = {}
        if bands.wavelengths is not None:
            wl = bands.wavelengths[i] / 1000.0 if micro else bands.wavelengths[i]
            t["wavelength"] = f"{wl:g}"
            t["wavelength_units"] = "micrometers" if micro else "nm"
        if bands.fwhm is not None:
            t["fwhm"] = f"{(bands.fwhm[i] / 1000.0 if micro else bands.fwhm[i]):g}"
        t["bad_band"] = "0" if bands.bad[i] else "1"
        out.append(t)
    return out


def store_scores(model: str | Path, entry: dict[str, Any]) -> None:
    """Record an evaluation's scores in the model file (see :func:`hsikit.checkpoint.record_evaluation`), dated
    and versioned; a read-only model file keeps its metadata and a warning says so."""
    from hsikit.checkpoint import record_evaluation

    entry = {**entry, "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
             "hsikit_version": __version__}
    try:
        record_evaluation(model, entry)
    except OSError as e:
        warnings.warn(f"the scores were not stored in {Path(model).name} ({e.strerror or e}); they are in the "
                      "report", stacklevel=2)
