"""Restoration models: speed and memory on CPU, and quality after a fixed CPU training budget on real EnMAP data.

    python bench/bench_restoration.py speed [--models hsdt essaformer mp-hsir]
    python bench/bench_restoration.py memory --model hsdt [--sizes 512 1024 2048]
    python bench/bench_restoration.py memory-cli [--runs denoise:wavelet restore:mp-hsir ...] [--sizes 512 4096]
    python bench/bench_restoration.py quality --data-dir ../shared/data/enmap_potsdam [--models ...] [--reuse]
    python bench/bench_restoration.py classical --data-dir ../shared/data/enmap_potsdam [--speed-size 512]

speed: parameters, training seconds per optimiser step (the recipe's batch of 64×64 crops over 100 bands;
HSDT on its 31-band runs), and inference megapixels/s of ``hsikit denoise/super-resolve/restore`` over a
generated 256×256×100 scene through the tiled engine, including reading and writing. memory: peak RSS of
tiled restoration of generated N×N×100 scenes (one child process per size). quality: each model trains on the
14 EnMAP Potsdam training tiles (validation PSNR on the 2 validation tiles) for a fixed number of optimiser
steps, then is scored on the 2 held-apart test tiles against the degraded input and the classical baselines.
classical: the training-free ``hsikit denoise`` methods (no -m) on the 2 EnMAP test tiles, each scaled to
[0, 1] by its own min-max and degraded as evaluate-restoration does (seed [0, tile index]), against PCA at the
rank (1-20) that is best against the clean tile ("pca-oracle"; also on the input with dead columns repaired),
per-band wavelet and TV; then the subspace command's speed and peak RSS on a generated N×N×100 scene.
memory-cli: the ``hsikit denoise/super-resolve/restore`` commands themselves under ``/usr/bin/time -v`` on
generated N×N×100 scenes (for super-resolution N is the output size), peak RSS and wall time per size; a run is
COMMAND:METHOD (denoise's training-free methods) or COMMAND:ARCH (an untrained checkpoint of MEMORY_CONFIG).
Each measurement runs in a child process so peak RSS is its own. Results are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_restoration"
MODELS = ["hsdt", "essaformer", "mp-hsir"]
KIND = {"hsdt": "denoiser", "essaformer": "super-resolver", "mp-hsir": "restorer"}
COMMAND = {"hsdt": "denoise", "essaformer": "super-resolve", "mp-hsir": "restore"}
#: CPU configurations: HSDT-S (the paper's smallest), ESSAformer dim 64 x4 (hsikit's CPU default, 0.73 M
#: parameters at 31 bands), MP-HSIR at dim 32 (the natural layout, same depths, half the published width)
CONFIG = {"hsdt": {"variant": "s"}, "essaformer": {"dim": 64, "scale": 4}, "mp-hsir": {"dim": 32}}
#: the fixed CPU training budget of the quality benchmark: optimiser steps and peak learning rate (None: the
#: recipe's). Short CPU budgets need a higher peak than the papers' long GPU schedules.
BUDGET = {"hsdt": (2000, None), "hsdt-m": (2000, None), "essaformer": (3000, 5e-4), "mp-hsir": (1500, 1e-3), "mp-hsir-denoise": (1500, 1e-3)}
#: named variants of the quality benchmark: (architecture, tasks trained, loss, configuration); None: the
#: architecture's defaults and CPU configuration
VARIANTS = {"hsdt-m": ("hsdt", None, None, {"variant": "m"}),
            "mp-hsir-denoise": ("mp-hsir", ["gaussian", "complex"], None, None)}
#: degradations scored per model
EVALS = {
    "hsdt-m": [("gaussian:sigma=30", None), ("gaussian:sigma=50", None), ("mixture", None)],
    "mp-hsir-denoise": [(None, "gaussian"), (None, "complex")],
    "hsdt": [("gaussian:sigma=30", None), ("gaussian:sigma=50", None), ("mixture", None)],
    "essaformer": [("downsample:scale=4", None)],
    "mp-hsir": [(None, t) for t in ("gaussian", "complex", "blur", "sr", "inpaint", "haze", "band-missing")],
}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scene(size: int, bands: int = 100) -> Path:
    from hsikit.synthetic import make_large_scene_file

    WORK.mkdir(parents=True, exist_ok=True)
    p = WORK / f"scene_{size}_{bands}.tif"
    if not p.exists():
        make_large_scene_file(p, height=size, width=size, bands=bands, seed=3)
    return p


def _untrained(model: str, scene: Path) -> Path:
    """A checkpoint of ``model`` after one optimiser step on ``scene`` (speed does not depend on the weights)."""
    from hsikit.pipelines.train_restorer import train_restorer
    from hsikit.training.run import RunOptions

    ck = WORK / f"speed_{model}.safetensors"
    if not ck.exists():
        train_restorer([scene], out=ck, kind=KIND[model], model=model, model_config=CONFIG[model], iterations=1,
                       steps_per_epoch=1, crop=64, val_crops=1, drop_bad_bands=False,
                       run=RunOptions(progress=False, overwrite=True))
    return ck


def _step_seconds(model: str, bands: int = 100, repeats: int = 3) -> float:
    """Median seconds of one optimiser step on the recipe's batch of 64² crops (forward, backward, Adam)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from hsikit.models.registry import create_model
    from hsikit.training.restoration import forward_restorer, restoration_recipe

    r = restoration_recipe(model)
    c = r.spectral_window or bands
    cfg = {"in_bands": c, **CONFIG[model]}
    torch.manual_seed(0)
    net = create_model(model, **cfg).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    s = int(cfg.get("scale", 1)) if model == "essaformer" else 1
    x = torch.rand(r.batch_size, c, r.crop // s, r.crop // s)
    y = torch.rand(r.batch_size, c, r.crop, r.crop)
    t = torch.zeros(r.batch_size, dtype=torch.long)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss = F.l1_loss(forward_restorer(net, x, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def child_speed(model: str) -> dict:
    from hsikit.checkpoint import load_checkpoint
    from hsikit.pipelines.restore import restore_scene

    scene = _scene(256)
    ck = _untrained(model, scene)
    net, _ = load_checkpoint(ck)
    out = WORK / f"speed_{model}_out.tif"
    task = "gaussian" if model == "mp-hsir" else None
    res = restore_scene(scene, out=out, model=ck, command=COMMAND[model], task=task, overwrite=True, progress=False)
    return {"bench": "speed", "model": model, "config": CONFIG[model],
            "parameters": int(sum(p.numel() for p in net.parameters())), "train_step_s": _step_seconds(model),
            "infer_s": res.seconds, "infer_mpx_s": res.pixels / 1e6 / res.seconds, "tiles": res.tiles,
            "tile": res.engine.tile, "overlap": res.engine.overlap, "rss_mb": _rss_mb()}


def child_memory(model: str, size: int) -> dict:
    from hsikit.pipelines.restore import restore_scene

    ck = _untrained(model, _scene(256))
    scene = _scene(size)
    res = restore_scene(scene, out=WORK / f"memory_{model}_{size}.tif", model=ck, command=COMMAND[model],
                        task="gaussian" if model == "mp-hsir" else None, overwrite=True, progress=False)
    return {"bench": "memory", "model": model, "size": size, "seconds": res.seconds,
            "mpx_s": res.pixels / 1e6 / res.seconds, "tiles": res.tiles, "tile": res.engine.tile,
            "max_accumulator_px": res.engine.max_accumulator_pixels, "rss_mb": _rss_mb()}


#: small configurations for memory-cli: peak RSS does not depend on the network's width, and the full
#: configurations would take hours at 4096² on a CPU
MEMORY_CONFIG = {"hsdt": {"variant": "s", "width": 4}, "essaformer": {"dim": 8, "scale": 2}, "mp-hsir": {"dim": 8}}


def memory_cli(run: str, size: int) -> dict:
    """``hsikit COMMAND`` on an N×N×100 scene under ``/usr/bin/time -v``: peak RSS (MB) and wall seconds."""
    import re

    command, what = run.split(":")
    args, scale = [command], 1
    classical = command == "denoise" and what in ("subspace", "pca", "wavelet", "tv")
    if classical:
        scene = _scene(size)
        args += ["--method", what]
    else:
        ck = WORK / f"memory_{what}.safetensors"
        if not ck.exists():
            from hsikit.pipelines.train_restorer import train_restorer
            from hsikit.training.run import RunOptions

            train_restorer([_scene(256)], out=ck, kind=KIND[what], model=what, model_config=MEMORY_CONFIG[what],
                           iterations=1, steps_per_epoch=1, crop=64, val_crops=1, drop_bad_bands=False,
                           run=RunOptions(progress=False, overwrite=True))
        scale = MEMORY_CONFIG[what].get("scale", 1) if command == "super-resolve" else 1
        scene = _scene(size // scale)
        args += ["-m", str(ck)] + (["--task", "gaussian"] if what == "mp-hsir" else [])
    out = WORK / f"memcli_{command}_{what}_{size}.tif"
    hsikit = Path(sys.executable).with_name("hsikit")
    cmd = ["/usr/bin/time", "-v", str(hsikit), "-q", *args, str(scene), "-o", str(out), "--overwrite"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
    h, m, sec = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr).groups()
    wall = int(h or 0) * 3600 + int(m) * 60 + float(sec)
    out.unlink()
    return {"bench": "memory-cli", "run": run, "output_size": size, "input_size": size // scale,
            "peak_rss_mb": round(rss), "seconds": round(wall, 1)}


def _split(data_dir: Path) -> dict[str, list[Path]]:
    out = {}
    for part, name in (("train", "train_files.csv"), ("val", "validation_files.csv"), ("test", "test_files.csv")):
        with (data_dir / name).open() as f:
            out[part] = [data_dir / row["image"] for row in csv.DictReader(f)]
    return out


def child_quality(name: str, data_dir: str, iterations: int, lr: float | None, reuse: bool) -> dict:
    from hsikit.pipelines.evaluate_restoration import evaluate_restoration
    from hsikit.pipelines.train_restorer import train_restorer
    from hsikit.training.run import RunOptions

    model, tasks, loss, config = VARIANTS.get(name, (name, None, None, None))
    config = config or CONFIG[model]
    split = _split(Path(data_dir))
    run = WORK / "quality" / name
    run.mkdir(parents=True, exist_ok=True)
    ck = run / f"{name}.safetensors"
    report_path = run / f"{name}_report" / "report.json"
    if not (reuse and ck.exists() and report_path.exists()):
        train_restorer(split["train"], val_scenes=split["val"], out=ck, kind=KIND[model], model=model,
                       model_config=config, tasks=tasks, loss=loss, iterations=iterations, lr=lr, crop=32, val_crops=4,
                       run=RunOptions(progress=False, overwrite=True))
    report = json.loads(report_path.read_text())
    rows = []
    for degradation, task in EVALS[name]:
        # MP-HSIR trains on its clamped output and scores clipped values (its paper's convention)
        ev = evaluate_restoration(ck, split["test"], degradation=degradation, task=task, device="cpu",
                                  clip=True if model == "mp-hsir" else None)
        rows.append({"degradation": ev.degradation, "task": ev.task, "methods": ev.methods})
    curve = report["loss_curve"]
    k = max(1, len(curve) // 10)
    return {"bench": "quality", "model": name, "config": config, "tasks": tasks, "loss": report["recipe"]["loss"],
            "iterations": report["recipe"]["iterations"], "lr": float(report["recipe"]["lr"]), "train_s": report["seconds"],
            "loss_first": sum(curve[:k]) / k, "loss_last": sum(curve[-k:]) / k,
            "val_psnr": [round(h["val_psnr"], 2) for h in report["history"]], "results": rows, "rss_mb": _rss_mb()}


CLASSICAL_DEGRADATIONS = ["gaussian:sigma=10", "gaussian:sigma=30", "gaussian:sigma=50", "mixture"]


def _clean_tile(path: Path):
    """A tile's cube scaled to [0, 1] by its own min-max over valid pixels (invalid pixels 0), and its name."""
    import numpy as np

    from hsikit.io.open import open_scene
    from hsikit.pipelines.restore import scene_value_range

    with open_scene(path) as sc:
        lo, hi = scene_value_range(sc, None)
        x = ((sc.read().astype(np.float32) - np.float32(lo)) / np.float32(hi - lo))
        x[:, ~sc.read_valid()] = 0.0
        return x, sc.name


def _denoise_command(noisy, work: Path, method: str):
    """``hsikit denoise --method METHOD`` (no model) on an in-memory cube: the shipped tiled path, read back."""
    import numpy as np
    import rasterio

    from hsikit.io.scene import ArrayScene
    from hsikit.pipelines.restore import denoise

    out = work / f"classical_{method}.tif"
    res = denoise(ArrayScene(np.ascontiguousarray(noisy)), out=out, method=method, overwrite=True, progress=False)
    with rasterio.open(out) as d:
        return d.read(), res


def child_classical(data_dir: str) -> dict:
    import warnings

    import numpy as np

    from hsikit.restoration import classical
    from hsikit.restoration.degradations import degrade, parse_degradations
    from hsikit.restoration.quality import psnr, quality_report
    from hsikit.restoration.subspace import repair_dead_columns

    warnings.simplefilter("ignore")  # in-memory cubes have no CRS
    WORK.mkdir(parents=True, exist_ok=True)
    tiles = _split(Path(data_dir))["test"]
    rows = []
    for deg in CLASSICAL_DEGRADATIONS:
        per = {}
        seconds = []
        ranks = []
        for i, path in enumerate(tiles):
            clean, name = _clean_tile(path)
            noisy = degrade(clean, parse_degradations(deg), np.random.default_rng([0, i])).x
            t0 = time.perf_counter()
            est, res = _denoise_command(noisy, WORK, "subspace")
            seconds.append(time.perf_counter() - t0)
            ranks.append(res.params["rank"])
            results = {"degraded input": noisy, "subspace": est}
            oracle = {}
            for label, x in (("pca-oracle", noisy), ("pca-oracle (dead columns repaired)", repair_dead_columns(noisy))):
                best = max(range(1, 21), key=lambda k: psnr(clean, classical.pca_denoise(x, rank=k)))
                results[label] = classical.pca_denoise(x, rank=best)
                oracle[label] = best
            results["pca (auto rank)"] = classical.pca_denoise(noisy)
            results["wavelet"] = classical.wavelet_denoise(noisy)
            results["tv"] = classical.tv_denoise(noisy)
            for label, x in results.items():
                per.setdefault(label, []).append(quality_report(clean, x))
            per.setdefault("_oracle_rank", []).append(oracle)
        methods = {label: {k: round(float(np.mean([r[k] for r in v])), 3) for k in ("psnr", "ssim", "sam")}
                   for label, v in per.items() if not label.startswith("_")}
        rows.append({"degradation": deg, "methods": methods, "subspace_rank": ranks,
                     "oracle_rank": per["_oracle_rank"], "subspace_s_per_tile": round(float(np.mean(seconds)), 3),
                     "gain_over_pca_oracle_db": round(methods["subspace"]["psnr"] - methods["pca-oracle"]["psnr"], 2)})
    return {"bench": "classical", "tiles": [p.name for p in tiles], "results": rows, "rss_mb": _rss_mb()}


def child_classical_speed(size: int) -> dict:
    from hsikit.pipelines.restore import denoise

    scene = _scene(size)
    res = denoise(scene, out=WORK / f"classical_speed_{size}.tif", overwrite=True, progress=False)
    return {"bench": "classical-speed", "method": "subspace", "size": size, "bands": 100, "seconds": res.seconds,
            "mpx_s": res.pixels / 1e6 / res.seconds, "tiles": res.tiles, "rank": res.params["rank"],
            "max_accumulator_px": res.engine.max_accumulator_pixels, "rss_mb": _rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--models", nargs="+", default=MODELS)
    m = sub.add_parser("memory")
    m.add_argument("--model", default="mp-hsir")
    m.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048])
    mc = sub.add_parser("memory-cli")
    mc.add_argument("--runs", nargs="+", default=["denoise:wavelet", "denoise:hsdt", "super-resolve:essaformer",
                                                  "restore:mp-hsir"])
    mc.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    q = sub.add_parser("quality")
    q.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data" / "enmap_potsdam"))
    q.add_argument("--models", nargs="+", default=MODELS)
    q.add_argument("--iterations", type=int, default=None, help="override every model's budget")
    q.add_argument("--lr", type=float, default=None, help="override every model's peak learning rate")
    q.add_argument("--reuse", action="store_true", help="score checkpoints already trained by an earlier run")
    k = sub.add_parser("classical")
    k.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data" / "enmap_potsdam"))
    k.add_argument("--speed-size", nargs="*", type=int, default=[512])
    c = sub.add_parser("_child")
    c.add_argument("what")
    c.add_argument("rest", nargs="*")
    a = ap.parse_args()
    if a.cmd == "_child":
        if a.what == "speed":
            r = child_speed(a.rest[0])
        elif a.what == "memory":
            r = child_memory(a.rest[0], int(a.rest[1]))
        elif a.what == "classical":
            r = child_classical(a.rest[0])
        elif a.what == "classical-speed":
            r = child_classical_speed(int(a.rest[0]))
        else:
            r = child_quality(a.rest[0], a.rest[1], int(a.rest[2]), None if a.rest[3] == "-" else float(a.rest[3]),
                              a.rest[4] == "reuse")
        print(json.dumps(r))
        return
    print(json.dumps({"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                      "command": " ".join(sys.argv)}))
    if a.cmd == "speed":
        for model in a.models:
            print(json.dumps(_child(["speed", model])), flush=True)
    elif a.cmd == "classical":
        print(json.dumps(_child(["classical", a.data_dir])), flush=True)
        for size in a.speed_size:
            print(json.dumps(_child(["classical-speed", str(size)])), flush=True)
    elif a.cmd == "memory-cli":
        for run in a.runs:
            for size in a.sizes:
                print(json.dumps(memory_cli(run, size)), flush=True)
    elif a.cmd == "memory":
        for size in a.sizes:
            print(json.dumps(_child(["memory", a.model, str(size)])), flush=True)
    else:
        for model in a.models:
            its, lr = BUDGET[model]
            its, lr = a.iterations or its, a.lr or lr
            print(json.dumps(_child(["quality", model, a.data_dir, str(its), "-" if lr is None else str(lr),
                                     "reuse" if a.reuse else "train"])), flush=True)


if __name__ == "__main__":
    main()
