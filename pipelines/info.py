"""`hsikit info`: what a scene holds, as a plain dict (JSON-serialisable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hsikit.io.scene import Scene


def scene_info(scene: str | Path | Scene, *, variable: str | None = None) -> dict[str, Any]:
    """Size, bands, wavelength range, bad bands, CRS, resolution, nodata and dtype of a scene.

    The first and last block of every band are read (scenes that support it), so a truncated or damaged file
    raises :class:`~hsikit.errors.InputError` here rather than hours into a run.
    """
    from hsikit.io.open import open_scene

    own = not isinstance(scene, Scene)
    sc = open_scene(scene, variable=variable) if own else scene
    try:
        check = getattr(sc, "check_readable", None)
        if check is not None:  # in-memory scenes (.mat cubes) were read whole when opened
            check()
        return _describe(sc)
    finally:
        if own:
            sc.close()


def _describe(sc: Scene) -> dict[str, Any]:
    b = sc.bands
    info: dict[str, Any] = {
        "file": sc.name,
        "width": sc.width,
        "height": sc.height,
        "bands": sc.count,
        "dtype": sc.dtype,
        "nodata": _num(sc.nodata),
        "crs": sc.crs.to_string() if sc.crs is not None else None,
        "epsg": sc.crs.to_epsg() if sc.crs is not None else None,
        "resolution": list(sc.res) if sc.crs is not None else None,
        "transform": list(sc.transform)[:6],
        "bounds": _bounds(sc) if sc.crs is not None else None,
        "band_names": list(b.names),
        "wavelength_range_nm": [min(b.wavelengths), max(b.wavelengths)] if b.wavelengths else None,
        "wavelength_units": b.wavelength_units,
        "fwhm_range_nm": [min(b.fwhm), max(b.fwhm)] if b.fwhm else None,
        "bad_bands": [i + 1 for i, bad in enumerate(b.bad) if bad],
        "scale": _uniform(b.scale),
        "offset": _uniform(b.offset),
        "class_names": sc.class_names,
    }
    if sc.tags.get("georef") == "gcps":
        info["georeferencing"] = "GCPs only (warp the scene before processing)"
    return info


def _num(v: Any) -> Any:
    if v is None:
        return None
    f = float(v)
    if f != f:
        return "nan"
    return int(f) if f.is_integer() else f


def _uniform(values: tuple[float, ...] | None) -> Any:
    """One number when every band shares it, else the list."""
    if values is None:
        return None
    return values[0] if len(set(values)) == 1 else list(values)


def _bounds(sc: Scene) -> list[float]:
    t = sc.transform
    xs = [t.c, t.c + t.a * sc.width + t.b * sc.height, t.c + t.b * sc.height, t.c + t.a * sc.width]
    ys = [t.f, t.f + t.d * sc.width + t.e * sc.height, t.f + t.e * sc.height, t.f + t.d * sc.width]
    return [min(xs), min(ys), max(xs), max(ys)]


def format_info(info: dict[str, Any]) -> str:
    """Human-readable summary, one fact a line."""
    lines = [
        f"file:        {info['file']}",
        f"size:        {info['width']} x {info['height']} px, {info['bands']} bands, {info['dtype']}",
    ]
    if info["crs"]:
        rx, ry = info["resolution"]
        lines.append(f"crs:         {info['crs']}" + (f" (EPSG:{info['epsg']})" if info["epsg"] and "EPSG" not in info["crs"] else ""))
        lines.append(f"resolution:  {rx:g} x {ry:g}")
        lines.append("bounds:      " + ", ".join(f"{v:.3f}" for v in info["bounds"]))
    else:
        lines.append("crs:         none (pixel grid only)")
    if info.get("georeferencing"):
        lines.append(f"georef:      {info['georeferencing']}")
    lines.append(f"nodata:      {info['nodata']}")
    if info["wavelength_range_nm"]:
        lo, hi = info["wavelength_range_nm"]
        lines.append(f"wavelengths: {lo:.1f}-{hi:.1f} nm")
    else:
        lines.append("wavelengths: unknown")
    bad = info["bad_bands"]
    lines.append(f"bad bands:   {len(bad)}" + (f" ({_ranges(bad)})" if bad else ""))
    if info["scale"] is not None:
        lines.append(f"scale:       {info['scale'] if not isinstance(info['scale'], list) else 'per band'}")
    names = info["band_names"]
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    lines.append(f"band names:  {shown}")
    if info["class_names"]:
        lines.append("classes:     " + ", ".join(f"{i + 1}={n}" for i, n in enumerate(info["class_names"])))
    return "\n".join(lines)


def _ranges(values: list[int]) -> str:
    """[1,2,3,7] -> '1-3, 7' (1-based band numbers)."""
    out, start, prev = [], None, None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = v
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(out)


def model_card(path: str | Path) -> dict[str, Any]:
    """What an hsikit checkpoint (or a model exported from one to ONNX) is, from its header only (no weights are
    read): architecture, configuration, task, bands, classes, preprocessing, provenance, the scores of evaluation
    runs stored with it, and for an exported model how it was exported."""
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.export.onnx import is_exported, read_exported

    exported = None
    if is_exported(path):  # an exported model carries its checkpoint's metadata and how it was exported
        meta, info = read_exported(path)
        exported = {"format": "ONNX", "opset": info.opset, "folded": info.folded,
                    "checkpoint": info.source.get("checkpoint"), "max_difference": info.max_difference}
    else:
        meta = read_checkpoint_meta(path)
    bands = meta.bands or {}
    steps = [s.get("op") for s in (meta.preprocessing or {}).get("steps", [])]
    wl = bands.get("wavelengths")
    return {
        "file": Path(path).name,
        "arch": meta.arch,
        "task": meta.task,
        "config": meta.config,
        "bands": len(bands.get("names") or wl or []) or None,
        "wavelength_range_nm": [min(wl), max(wl)] if wl else None,
        "classes": meta.class_names,
        "preprocessing": steps,
        "preprocessing_fitted": bool((meta.preprocessing or {}).get("input_bands")) if steps else None,
        "restoration": meta.restoration,
        "provenance": meta.provenance,
        "evaluations": meta.evaluations,
        "hsikit_version": meta.hsikit_version,
        "exported": exported,
    }


def format_model_card(card: dict[str, Any]) -> str:
    """Human-readable model card, one fact a line."""
    prov = card["provenance"] or {}
    cfg = ", ".join(f"{k}={v}" for k, v in card["config"].items())
    lines = [f"file:          {card['file']}", f"architecture:  {card['arch']} ({card['task']})", f"config:        {cfg}"]
    if card["bands"]:
        rng = card["wavelength_range_nm"]
        lines.append(f"bands:         {card['bands']}" + (f", {rng[0]:.0f}-{rng[1]:.0f} nm" if rng else ""))
    if card["classes"]:
        lines.append("classes:       " + ", ".join(f"{i + 1}={n}" for i, n in enumerate(card["classes"])))
    if card["preprocessing"]:
        fitted = "fitted" if card["preprocessing_fitted"] else "fitted on each scene it runs on"
        lines.append(f"preprocessing: {' > '.join(card['preprocessing'])} ({fitted})")
    if card["restoration"]:
        lines.append(f"value scaling: {card['restoration'].get('scaling')}")
    if prov.get("official"):
        lines.append(f"imported from: {prov.get('source_file')} (sha256 {str(prov.get('source_sha256'))[:12]}…), "
                     f"{prov['official']}")
        lines.append(f"paper:         {prov.get('paper')}")
    elif prov.get("scenes") or prov.get("scene"):
        lines.append(f"trained on:    {', '.join(prov.get('scenes') or [prov.get('scene')])}")
    for key in ("oa", "kappa", "val_psnr", "metrics"):
        if prov.get(key) is not None:
            lines.append(f"{key + ':':<14} {prov[key]}")
    ex = card.get("exported")
    if ex:
        folded = f"; folded in: {', '.join(ex['folded'])}" if ex["folded"] else ""
        diff = f"; max difference from torch {ex['max_difference']:.2g}" if ex["max_difference"] is not None else ""
        lines.append(f"exported:      {ex['format']} opset {ex['opset']} from {ex['checkpoint']}{folded}{diff}")
    lines.append(f"hsikit:        {card['hsikit_version']}")
    evals = card.get("evaluations") or []
    if evals:
        lines.append(f"evaluations:   {len(evals)} (newest last)")
        lines.extend("  " + _evaluation_line(e) for e in evals)
    return "\n".join(lines)


def _evaluation_line(e: dict[str, Any]) -> str:
    """One stored evaluation in words."""
    day = str(e.get("date", ""))[:10]
    if "oa" in e:
        return (f"{day} {e.get('scene')} vs {e.get('labels')} ({e.get('scored')}, {e.get('pixels')} px): "
                f"OA {e['oa']:.4f}, AA {e.get('aa', float('nan')):.4f}, kappa {e.get('kappa', float('nan')):.4f}")
    scores = e.get("scores") or {}
    parts = [f"{m} {v['psnr']:.2f} dB" + (f"/SSIM {v['ssim']:.3f}" if "ssim" in v else "")
             for m, v in scores.items() if "psnr" in v]
    return f"{day} {'+'.join(e.get('scenes') or [])}, {e.get('degradation')} (seed {e.get('seed')}): PSNR " + ", ".join(parts)
