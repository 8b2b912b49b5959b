"""Apply a band-preprocessing chain to a whole scene, window by window, into a float32 COG."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hsikit.io.scene import Scene
from hsikit.progress import Progress


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

    ``chain`` is a :class:`~hsikit.preprocess.chain.Chain`, its dict, or a JSON file; otherwise one is built from
    the keyword options (see ``Chain.from_options``). Steps that need statistics are fitted in one streaming pass.
    The chain (with its statistics) is stored in the output's ``HSIKIT_PREPROCESSING`` tag so it can be replayed.
    """
    from hsikit.io.atomic import check_output
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
        ch = build_chain(chain, drop_bad_bands=drop_bad_bands, wavelength_range=wavelength_range,
                         resample_to=resample_to, scale=scale, normalize=normalize, pca=pca).fit(sc)
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
    """A :class:`~hsikit.preprocess.chain.Chain` (not yet fitted) from a Chain, its dict, a JSON file, or the
    keyword options of ``Chain.from_options``."""
    from hsikit.preprocess.chain import Chain

    if chain is None:
        return Chain.from_options(**options)
    if isinstance(chain, Chain):
        return chain
    if isinstance(chain, (str, Path)):
        return Chain.from_dict(json.loads(Path(chain).read_text()))
    return Chain.from_dict(chain)


def apply_window(sc: Scene, ch, window) -> np.ndarray:
    """The fitted chain over one window of ``sc`` (float32, NaN where the input is invalid)."""
    raw = sc.read(window)
    valid = sc.read_valid(window, raw)
    res = ch.apply(raw, valid).astype(np.float32, copy=False)
    res[:, ~valid] = np.nan
    return res


def preprocess_writer(out: Path, sc: Scene, ch, *, command: str | None, fmt: str, overwrite: bool,
                      extra_tags: dict[str, str] | None = None, temp_dir: str | Path | None = None):
    """The RasterWriter of a preprocessed scene; the fitted chain goes into its ``HSIKIT_PREPROCESSING`` tag."""
    from hsikit.io.writer import RasterWriter
    from hsikit.pipelines.common import provenance_tags, spectral_band_tags

    bands_out = ch.output_bands(sc.bands)
    tags = provenance_tags(scene=sc, command=command, bands_used=list(sc.bands.names),
                           extra={"HSIKIT_PREPROCESSING": json.dumps(ch.to_dict()), **(extra_tags or {})})
    return RasterWriter(
        out, width=sc.width, height=sc.height, count=bands_out.count, dtype="float32", nodata=float("nan"),
        crs=sc.crs, transform=sc.transform, kind="continuous", overwrite=overwrite, fmt=fmt, tags=tags,
        band_descriptions=[bands_out.describe(i) for i in range(bands_out.count)],
        band_tags=spectral_band_tags(bands_out), temp_dir=temp_dir,
    )
