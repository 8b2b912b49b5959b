"""Tiled classification benchmark: throughput, engine overhead and peak memory versus scene size.

    python bench/bench_tiled.py --sizes 1024 4096 8192 [--bands 100] [--tile 512] [--max-memory 8G]
                                [--device cpu] [--model spectral-cnn|unet|freenet]

Each size runs in a fresh child process so its peak RSS (ru_maxrss) is its own. The model has random weights (speed
does not depend on training); its checkpoint is written to bench/_scenes/. Without --tile, classify plans its tiles
from the memory budget (--max-memory, default a third of the RAM).
"Bare forward" runs the same predictor on as many in-memory tiles of the same extent as the engine sent to the
model: engine overhead = (classify - bare) / bare. "Scene forward" scales the bare forward to the scene's own
pixels (what one tile without halos would cost): it also charges the halos' recomputation to the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENES = HERE / "_scenes"


def ensure_scene(size: int, bands: int) -> Path:
    from hsikit.synthetic import make_large_scene_file

    path = SCENES / f"scene_{size}x{size}x{bands}.tif"
    if not path.exists():
        SCENES.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tmp = path.with_suffix(".tmp.tif")
        make_large_scene_file(tmp, height=size, width=size, bands=bands, seed=size)
        tmp.rename(path)
        print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def ensure_model(bands: int, arch: str = "spectral-cnn", classes: int = 8) -> Path:
    """A checkpoint with random weights and a fixed scale+normalise chain (no fitting pass over huge scenes)."""
    import torch

    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.io.bandinfo import BandInfo
    from hsikit.models.registry import create_model
    from hsikit.preprocess.chain import Chain, Step

    path = SCENES / f"model_{arch}_{bands}b.safetensors"
    if path.exists():
        return path
    SCENES.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = {"in_bands": bands, "num_classes": classes}
    net = create_model(arch, **config)
    chain = Chain([Step("scale", {"scale": [1e-4] * bands, "offset": [0.0] * bands}), Step("normalize", {"mean": [0.25] * bands, "std": [0.15] * bands})])
    meta = CheckpointMeta(arch=arch, config=config, task="classification",
                          bands=BandInfo.default(bands).to_dict(), preprocessing=chain.to_dict(),
                          class_names=[f"class {i + 1}" for i in range(classes)], class_colors=None,
                          provenance={"note": "random weights for benchmarking"})
    save_checkpoint(path, net, meta, overwrite=True)
    return path


def child(size: int, bands: int, tile: int | None, device: str, arch: str, repeat: int,
          max_memory: str | None = None) -> dict:
    """Runs in its own process: classify the scene, then time the bare model on the same tiles in memory.

    Both are repeated ``repeat`` times, alternating, and the fastest run of each is kept: shared CPUs vary by
    +-30 % from minute to minute, and the minimum is the least disturbed measurement."""
    from hsikit.pipelines.classify import classify

    scene = SCENES / f"scene_{size}x{size}x{bands}.tif"
    model = SCENES / f"model_{arch}_{bands}b.safetensors"
    out = SCENES / f"classes_{size}.tif"
    runs, bares = [], []
    for i in range(repeat):
        runs.append(classify(str(scene), model=model, out=out, tile=tile, max_memory=max_memory, device=device,
                             overwrite=True, progress=False))
        if i == 0:  # before the bare-forward runs allocate anything
            rss_engine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        th, tw = _extent(runs[-1].engine.tile)
        per_call = max(1, round(runs[-1].tiles / max(runs[-1].engine.predict_calls, 1)))  # tiles per model call
        bares.append(_bare_forward(model, arch, bands, (th, tw), device, runs[-1].tiles, per_call))
    res = min(runs, key=lambda r: r.seconds)
    bare = min(bares)
    fed = res.tiles * th * tw

    return {
        "size": size, "bands": bands, "tile": tile, "device": device, "model": arch, "repeat": repeat,
        "seconds": res.seconds, "megapixels": size * size / 1e6, "mpx_per_s": size * size / 1e6 / res.seconds,
        "tiles": res.tiles, "skipped_tiles": res.skipped_tiles, "tile_extent": [th, tw],
        "overlap": res.engine.overlap, "bare_forward_seconds": bare,
        "overhead_pct": 100.0 * (res.seconds - bare) / bare, "scene_forward_seconds": bare * size * size / fed,
        "overhead_vs_scene_pct": 100.0 * (res.seconds - bare * size * size / fed) / (bare * size * size / fed),
        "peak_rss_mb": rss_engine,
        "engine_seconds": res.engine.seconds, "engine_predict_seconds": res.engine.predict_seconds,
        "reader_thread_seconds": res.engine.read_seconds,
    }


def _extent(tile) -> tuple[int, int]:
    return (int(tile[0]), int(tile[1])) if isinstance(tile, (tuple, list)) else (int(tile), int(tile))


def _bare_forward(model: Path, arch: str, bands: int, tile: tuple[int, int], device: str, n_tiles: int,
                  per_call: int) -> float:
    """Seconds for the predictor alone on ``n_tiles`` preprocessed tiles already in memory."""
    import numpy as np

    from hsikit.checkpoint import load_checkpoint
    from hsikit.engine.torch_predict import TorchPredictor
    from hsikit.models.registry import get_entry

    net, meta = load_checkpoint(model)
    entry = get_entry(arch)
    local = entry.receptive_field(entry.config_cls(**meta.config)) == 0
    pred = TorchPredictor(net, device=device, softmax=True, pixel_local=local, size_multiple=entry.size_multiple)
    batch = np.random.default_rng(0).standard_normal(size=(per_call, bands, *tile), dtype=np.float32)
    pred(batch[:1])  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < n_tiles:
        k = min(per_call, n_tiles - done)
        pred(batch[:k])
        done += k
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--bands", type=int, default=100)
    ap.add_argument("--tile", type=int, default=None, help="fixed tile size (default: planned from the budget)")
    ap.add_argument("--max-memory", default=None, help="memory budget for the planned tiles, e.g. 8G")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="spectral-cnn", choices=["spectral-cnn", "unet", "freenet"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest is reported")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--keep-outputs", action="store_true")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.bands, a.tile, a.device, a.model, a.repeat, a.max_memory)))
        return
    ensure_model(a.bands, a.model)
    rows = []
    for size in a.sizes:
        ensure_scene(size, a.bands)
        cmd = [sys.executable, __file__, "--child", str(size), "--bands", str(a.bands), "--device", a.device,
               "--model", a.model, "--repeat", str(a.repeat if size < 8192 else 1)]
        cmd += ["--tile", str(a.tile)] if a.tile else []
        cmd += ["--max-memory", a.max_memory] if a.max_memory else []
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"size {size} failed:\n{r.stderr[-3000:]}")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{a.model} {size}x{size}x{a.bands}: {row['mpx_per_s']:.3f} Mpx/s, {row['seconds']:.1f} s, "
              f"{row['tiles']} tiles of {row['tile_extent'][0]}x{row['tile_extent'][1]} (overlap {row['overlap']}), "
              f"bare forward {row['bare_forward_seconds']:.1f} s, overhead {row['overhead_pct']:.1f} %, "
              f"over the scene's own pixels {row['overhead_vs_scene_pct']:.1f} %, peak RSS {row['peak_rss_mb']:.0f} MB",
              flush=True)
        if not a.keep_outputs:
            for f in SCENES.glob(f"classes_{size}*"):
                f.unlink()
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
