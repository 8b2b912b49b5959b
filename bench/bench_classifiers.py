"""Classification models: speed on CPU and accuracy on the real EnMAP Potsdam test tiles.

    python bench/bench_classifiers.py speed [--models freenet morpmamba unet spectral-cnn svm random-forest]
    python bench/bench_classifiers.py freenet-tiling
    python bench/bench_classifiers.py accuracy --data-dir ../shared/data/enmap_potsdam --seeds 5 [--models ...]
    python bench/bench_classifiers.py simulated-indian-pines --data-dir ../shared/data --seeds 5 [--sigma 0 0.2 0.5]

speed: training time per optimiser step (FreeNet: one GS² iteration over the whole 512×512×200 scene; patch and
pixel models: one minibatch of their recipe) and inference megapixels/s over a generated 512×512×200 scene
through the tiled engine (``hsikit.classify``). freenet-tiling: whole-image versus tiled inference time, peak
memory and class-map agreement (Potsdam mosaic with the accuracy run's FreeNet; run accuracy and speed
first). accuracy: ``benchmark_classify`` on the published Potsdam split. simulated-indian-pines: the
semi-synthetic Indian Pines cube (clean, or with Gaussian noise of each ``--sigma``) with 10 % of each class's
labelled pixels as the user's training labels (``--train``) and the rest as test labels; seeds draw the split and
the initialisation.
Each measurement runs in a child process so peak RSS is its own. Results are printed as JSON lines.
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
WORK = HERE / "_classifiers"
MODELS = ["freenet", "morpmamba", "unet", "spectral-cnn", "svm", "random-forest"]
#: named variants for the accuracy tables: (architecture, train_classifier overrides); a plain name is the
#: architecture with its default recipe
VARIANTS = {
    "morpmamba-notebook": ("morpmamba", {"recipe": "notebook"}),
    # the notebook's recipe with PCA not whitened and the best-validation epoch
    "morpmamba-unwhitened-best": ("morpmamba", {"recipe": "notebook", "chain": {"pca_whiten": False},
                                                "select_best": True}),
}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scene_and_labels(size: int = 512, bands: int = 200) -> tuple[Path, Path]:
    """The generated benchmark scene and labels of its material pattern on every 7th pixel."""
    import numpy as np
    import rasterio

    from hsikit.synthetic import CLASS_NAMES, make_large_scene_file

    WORK.mkdir(parents=True, exist_ok=True)
    scene, labels = WORK / f"scene_{size}_{bands}.tif", WORK / f"labels_{size}_{bands}.tif"
    if not scene.exists():
        make_large_scene_file(scene, height=size, width=size, bands=bands, seed=1)
    if not labels.exists():
        yy, xx = np.mgrid[0:size, 0:size]
        cls = ((yy // 23) * 7 + (xx // 31) * 3 + (yy // 97) + (xx // 61)) % len(CLASS_NAMES) + 1
        cls[(yy * size + xx) % 7 != 0] = 0
        with rasterio.open(scene) as src:
            prof = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": 0,
                    "crs": src.crs, "transform": src.transform}
        with rasterio.open(labels, "w", **prof) as dst:
            dst.write(cls.astype("uint8"), 1)
    return scene, labels


def child_speed(model: str) -> dict:
    import numpy as np
    import torch

    from hsikit.io.labels import read_labels
    from hsikit.io.open import open_scene
    from hsikit.models.registry import get_entry
    from hsikit.pipelines.classify import classify
    from hsikit.pipelines.train_classifier import classifier_data, train_classifier
    from hsikit.training.run import RunOptions

    scene, labels = _scene_and_labels()
    ckpt = WORK / f"{model}.safetensors"
    kw: dict = {"protocol": "paper", "train_pixels": 50, "val": 0}
    kw.update({"iterations": 5} if model == "freenet" else {"epochs": 2})
    t0 = time.perf_counter()
    train_classifier(scene, labels, out=ckpt, model=model, run=RunOptions(overwrite=True, progress=False), **kw)
    train_s = time.perf_counter() - t0
    # time per step from the training loop alone: re-run one epoch's worth with a timer around the fit
    from hsikit.training.data import DATA_KINDS
    entry = get_entry(model)
    per_step = None
    if entry.inputs in DATA_KINDS and model not in ("svm", "random-forest"):
        from hsikit.models.registry import create_model, make_config
        from hsikit.preprocess.chain import Chain
        from hsikit.sampling import stratified_split
        from hsikit.training.recipes import recipe_for

        with open_scene(scene) as sc:
            lab = read_labels(labels, sc).values
            r = recipe_for(model)
            ch = Chain.from_options(**r.chain).fit(sc)
            x = ch.apply_scene(sc)
        sp = stratified_split(lab, train=r.train if model != "freenet" else 200, seed=0)
        cfg = {"in_bands": x.shape[0], "num_classes": int(lab.max())}
        net = create_model(model, **cfg)
        data = classifier_data(entry, x, lab, sp.train, r, tile=64,
                               context=int(entry.receptive_field(make_config(model, **cfg))), model_config=cfg)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        it = iter(data.train_loader())
        times = []
        for i in range(4):
            batch = next(it)
            t = time.perf_counter()
            loss = data.loss(net, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        per_step = float(np.median(times[1:]))
        steps_per_epoch = data.steps_per_epoch()
    else:
        steps_per_epoch = None
    t0 = time.perf_counter()
    cres = classify(scene, out=WORK / f"{model}_map.tif", model=ckpt, overwrite=True, progress=False)
    infer_s = time.perf_counter() - t0
    return {"bench": "speed", "model": model, "train_seconds_total": round(train_s, 2),
            "seconds_per_step": per_step and round(per_step, 4), "steps_per_epoch": steps_per_epoch,
            "infer_seconds": round(infer_s, 2), "infer_mpx_per_s": round(cres.pixels / infer_s / 1e6, 4),
            "scene": "512x512x200", "peak_rss_mb": round(_rss_mb()), "threads": torch.get_num_threads()}


def child_classify(scene: str, model: str, tile: int, out: str) -> dict:
    """One classification in its own process: wall time and peak RSS."""
    import torch

    from hsikit.pipelines.classify import classify

    t0 = time.perf_counter()
    res = classify(scene, out=out, model=model, tile=tile, overwrite=True, progress=False)
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(_rss_mb()), "tiles": res.tiles,
            "threads": torch.get_num_threads()}


def freenet_tiling(data_dir: str) -> list[dict]:
    """Whole-image (one tile) versus tiled FreeNet inference: the real Potsdam mosaic with the accuracy run's
    seed-0 model (agreement), and the 512×512×200 generated scene with the speed run's model (time, memory)."""
    import rasterio

    from hsikit.pipelines.protocols import enmap_potsdam

    rows = []
    f = enmap_potsdam(data_dir, WORK / "potsdam")
    ckpt = WORK / "accuracy" / "freenet" / "freenet_seed0.safetensors"
    if not ckpt.exists():
        raise SystemExit(f"run the accuracy benchmark for freenet first ({ckpt} missing)")
    maps = {}
    for tile in (512, 160):
        out = WORK / f"potsdam_freenet_t{tile}.tif"
        r = _child(["classify", str(f.scene), str(ckpt), str(tile), str(out)])
        with rasterio.open(out) as src:
            maps[tile] = src.read(1)
        rows.append({"bench": "freenet-tiling", "scene": "potsdam 192x160x224", "tile": tile, **r})
    with rasterio.open(f.labels) as src:
        lab = src.read(1)
    valid = maps[512] > 0
    rows.append({"bench": "freenet-tiling", "scene": "potsdam", "agreement_all_pixels":
                 float((maps[512][valid] == maps[160][valid]).mean()),
                 "agreement_labelled": float((maps[512][lab > 0] == maps[160][lab > 0]).mean()),
                 "oa_whole": float((maps[512][lab > 0] == lab[lab > 0]).mean()),
                 "oa_tiled": float((maps[160][lab > 0] == lab[lab > 0]).mean())})
    scene, _ = _scene_and_labels()
    model = WORK / "freenet.safetensors"
    if model.exists():
        for tile in (512, 256):
            out = WORK / f"scene512_freenet_t{tile}.tif"
            rows.append({"bench": "freenet-tiling", "scene": "generated 512x512x200", "tile": tile,
                         **_child(["classify", str(scene), str(model), str(tile), str(out)])})
    return rows


def simulated_indian_pines(data_root: str, models: list[str], seeds: int, sigmas: list[float],
                           train: float) -> list[dict]:
    """Each model over ``seeds`` random draws of ``train`` of every class as training labels (the rest tests),
    through the user protocol of ``train_classifier`` (10 % of the training labels validate)."""
    import numpy as np

    from hsikit.io.labels import LabelMap
    from hsikit.pipelines.protocols import simulated_indian_pines as load
    from hsikit.pipelines.train_classifier import train_classifier
    from hsikit.sampling import Amount, stratified_split
    from hsikit.training.run import RunOptions

    root = Path(data_root)
    rows = []
    for sigma in sigmas:
        scene, lm = load(root / "simulated_indian_pines/simu_indian.mat", root / "indian_pines_gt/Indian_pines_gt.mat",
                         sigma=sigma)
        for m in models:
            arch, over = VARIANTS.get(m, (m, {}))
            out = WORK / "simulated_indian_pines" / f"sigma{sigma:g}" / m
            out.mkdir(parents=True, exist_ok=True)
            runs = []
            for seed in range(seeds):
                sp = stratified_split(lm.values, train=Amount(fraction=train), val=Amount(fraction=0.0), seed=seed)
                own = LabelMap(np.where(sp.train, lm.values, 0), lm.class_names, lm.class_colors)
                test = LabelMap(np.where(sp.test, lm.values, 0), lm.class_names, lm.class_colors)
                t0 = time.perf_counter()
                run = RunOptions(seed=seed, overwrite=True, progress=False, report_dir=out / f"seed{seed}_report")
                r = train_classifier(scene, own, test_labels=test, out=out / f"seed{seed}.safetensors", model=arch,
                                     run=run, **over)
                runs.append({"seed": seed, "oa": r.metrics["oa"], "aa": r.metrics["aa"], "kappa": r.metrics["kappa"],
                             "seconds": round(time.perf_counter() - t0, 1)})
            oa = np.array([r["oa"] for r in runs])
            rows.append({"bench": "simulated-indian-pines", "sigma": sigma, "train": train, "model": m,
                         "overrides": over, "oa_mean": float(oa.mean()), "oa_std": float(oa.std(ddof=1)) if
                         oa.size > 1 else 0.0, "runs": runs})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "freenet-tiling", "accuracy", "simulated-indian-pines", "_child"])
    p.add_argument("rest", nargs="*")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--data-dir", default=str(HERE.parent.parent / "shared/data/enmap_potsdam"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=None, help="FreeNet iterations (default: the paper's 1000)")
    p.add_argument("--sigma", type=float, nargs="+", default=[0.0, 0.2, 0.5],
                   help="simulated-indian-pines: Gaussian noise levels (0 = the clean cube)")
    p.add_argument("--train", type=float, default=0.1, help="simulated-indian-pines: training share per class")
    a = p.parse_args()
    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    if a.what == "_child":
        kind, *args = a.rest
        if kind == "speed":
            print(json.dumps(child_speed(args[0])))
        elif kind == "classify":
            print(json.dumps(child_classify(args[0], args[1], int(args[2]), args[3])))
        return
    if a.what == "speed":
        for m in a.models:
            print(json.dumps({**_child(["speed", m]), **machine}), flush=True)
    elif a.what == "simulated-indian-pines":
        models = a.models if a.models != MODELS else ["svm", "morpmamba", "morpmamba-notebook"]
        root = a.data_dir if a.data_dir != p.get_default("data_dir") else str(HERE.parent.parent / "shared/data")
        simulated_indian_pines(root, models, a.seeds, a.sigma, a.train)
    elif a.what == "freenet-tiling":
        for row in freenet_tiling(a.data_dir):
            print(json.dumps({**row, **machine}), flush=True)
    else:
        from hsikit.pipelines.benchmark import benchmark_classify

        for m in a.models:
            arch, over = VARIANTS.get(m, (m, {}))
            over = dict(over, **({"iterations": a.iterations} if (arch == "freenet" and a.iterations) else {}))
            res = benchmark_classify("enmap_potsdam", arch, out=WORK / "accuracy" / m, protocol="published",
                                     seeds=a.seeds, data_dir=a.data_dir, overrides=over, overwrite=True,
                                     progress=False)
            print(json.dumps({"bench": "accuracy", "model": m, "overrides": over, **res.summary(),
                              "runs": [{k: r[k] for k in ("seed", "oa", "aa", "kappa")} for r in res.runs], **machine}),
                  flush=True)


if __name__ == "__main__":
    main()
