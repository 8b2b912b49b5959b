"""Apply a band-preprocessing chain to a whole scene, window by window, into a float32 COG."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hsikit.errors import InputError
from hsikit.io.scene import Scene
from hsikit.progress import Progress

#: chains whose JSON is longer go to the "HSIKIT" metadata domain, with a summary in the default one
CHAIN_TAG_LIMIT = 4096
CHAIN_TAG = "HSIKIT_PREPROCESSING"
CHAIN_DOMAIN = "HSIKIT"
_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img"}


@dataclass
class PreprocessResult:
    out: Path
    chain: dict[str, Any]
    bands_in: int
    bands_out: int
    seconds: float


def preprocess_scene(
    scene: str | Path | Scene,
    *,
    out: str | Path,
    chain: Any = None,
    drop_bad_bands: bool = False,
    wavelength_range: tuple[float, float] | None = None,
    resample_to: str | None = None,
    scale: float | None = None,
    normalize: bool = False,
    pca: int | None = None,
    block: int = 512,
    fmt: Literal["cog", "gtiff"] = "cog",
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> PreprocessResult:
    """Fit (if needed) and apply a preprocessing chain to ``scene`` and write the result to ``out``.

    ``chain`` is a :class:`~hsikit.preprocess.chain.Chain`, its dict, a JSON file or a raster preprocessed by
    hsikit; otherwise one is built from the keyword options (see ``Chain.from_options``). Steps that need
    statistics are fitted in one streaming pass. The fitted chain is stored in the output's tags so it can be
    replayed (see :func:`preprocess_writer`, :func:`read_chain_tag`).
    """
    from hsikit.io.atomic import check_output
    from hsikit.io.gaps import check_band_gaps
    from hsikit.io.open import open_scene
    from hsikit.pipelines.common import check_georeferencing
    from hsikit.windows import iter_windows

    out = Path(out)
    check_output(out, overwrite)
    t0 = time.perf_counter()
    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        check_georeferencing(sc)
        check_band_gaps(sc)
        ch = build_chain(chain, drop_bad_bands=drop_bad_bands, wavelength_range=wavelength_range,
                         resample_to=resample_to, scale=scale, normalize=normalize, pca=pca).fit(sc)
        ch = type(ch).from_dict(json.loads(ch.to_json()))  # apply exactly what the tag will say
        bands_out = ch.output_bands(sc.bands)
        writer = preprocess_writer(out, sc, ch, command=command, fmt=fmt, overwrite=overwrite)
        windows = list(iter_windows(sc.width, sc.height, block))
        with writer, Progress(progress, len(windows), f"preprocessing {sc.name}", unit="windows") as bar:
            for w in windows:
                writer.write(apply_window(sc, ch, w), w)
                bar.advance(pixels=int(w.width) * int(w.height))
    finally:
        if own:
            sc.close()
    return PreprocessResult(out, ch.to_dict(), sc.count, bands_out.count, time.perf_counter() - t0)


def build_chain(chain: Any = None, **options: Any):
    """A :class:`~hsikit.preprocess.chain.Chain` (not yet fitted) from a Chain, its dict, a JSON file, a raster
    written by ``hsikit preprocess`` (its stored chain), or the keyword options of ``Chain.from_options``."""
    from hsikit.preprocess.chain import Chain

    if chain is None:
        return Chain.from_options(**options)
    if isinstance(chain, Chain):
        return chain
    if isinstance(chain, (str, Path)):
        p = Path(chain)
        if not p.exists():
            raise InputError(f"chain file not found: {p}")
        if p.suffix.lower() in _RASTER_SUFFIXES:
            return Chain.from_dict(read_chain_tag(p))
        try:
            return Chain.from_dict(json.loads(p.read_text()))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"chain file {p.name} is not JSON: {e}") from None
    return Chain.from_dict(chain)


def chain_tags(ch) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(default-domain tags, other domains) holding the fitted chain ``ch``: its compact JSON in the default
    domain when short, else a summary there and the full chain in the ``HSIKIT`` domain."""
    full = ch.to_json()
    if len(full) <= CHAIN_TAG_LIMIT:
        return {CHAIN_TAG: full}, {}
    summary = {**ch.summary(), "full_chain": f"metadata domain {CHAIN_DOMAIN}, item {CHAIN_TAG}"}
    return {CHAIN_TAG: json.dumps(summary, separators=(",", ":"))}, {CHAIN_DOMAIN: {CHAIN_TAG: full}}


def read_chain_tag(path: str | Path) -> dict[str, Any]:
    """The replayable chain stored in a raster written by ``hsikit preprocess`` (either layout of
    :func:`chain_tags`)."""
    import rasterio

    p = Path(path)
    try:
        with rasterio.open(p) as src:
            text = src.tags(ns=CHAIN_DOMAIN).get(CHAIN_TAG) or src.tags().get(CHAIN_TAG)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"cannot read {p.name}: {str(e).splitlines()[0]}") from None
    if not text:
        raise InputError(f"{p.name} has no {CHAIN_TAG} tag: it was not written by hsikit preprocess")
    d = json.loads(text)
    if d.get("summary"):
        raise InputError(f"{p.name} holds only a summary of its preprocessing chain: the full chain (metadata "
                         f"domain {CHAIN_DOMAIN}) was lost, e.g. by copying the file without its .aux.xml or "
                         "with a tool that keeps only the default domain")
    return d


def apply_window(sc: Scene, ch, window) -> np.ndarray:
    """The fitted chain over one window of ``sc`` (float32, NaN where the input is invalid)."""
    raw = sc.read(window)
    valid = sc.read_valid(window, raw)
    res = ch.apply(raw, valid).astype(np.float32, copy=False)
    res[:, ~valid] = np.nan
    return res


def preprocess_writer(out: Path, sc: Scene, ch, *, command: str | None, fmt: str, overwrite: bool,
                      extra_tags: dict[str, str] | None = None, temp_dir: str | Path | None = None):
    """The RasterWriter of a preprocessed scene; the fitted chain goes into its ``HSIKIT_PREPROCESSING`` tag
    (see :func:`chain_tags`)."""
    from hsikit.io.gaps import fill_tags
    from hsikit.io.writer import RasterWriter
    from hsikit.pipelines.common import provenance_tags, spectral_band_tags

    bands_out = ch.output_bands(sc.bands)
    chain_default, domains = chain_tags(ch)
    tags = provenance_tags(scene=sc, command=command, bands_used=list(sc.bands.names),
                           extra={**chain_default, **fill_tags(sc), **(extra_tags or {})})
    return RasterWriter(
        out, width=sc.width, height=sc.height, count=bands_out.count, dtype="float32", nodata=float("nan"),
        crs=sc.crs, transform=sc.transform, kind="continuous", overwrite=overwrite, fmt=fmt, tags=tags,
        band_descriptions=[bands_out.describe(i) for i in range(bands_out.count)],
        band_tags=spectral_band_tags(bands_out), temp_dir=temp_dir, tag_domains=domains or None,
    )
