"""FFDNN crop-stress model: accuracy on held-apart simulated fields against a random forest, and inference speed.

    python bench/bench_ffdnn.py accuracy [--seeds 3] [--fields-per-class 20] [--field-size 10] [--epochs 40] [--ablation]
    python bench/bench_ffdnn.py speed [--size 256] [--dates 60] [--threads 1]
    python bench/bench_ffdnn.py memory [--sizes 256 512] [--dates 60]

accuracy: for each seed, a simulated series (hsikit.timeseries.simulator, not real data) is split by field
70/15/15 (the split of ``train_stress``); FFDNN trains with its recipe (early stopping on the validation
fields); a scikit-learn random forest (500 trees) trains on the same filtered photochemical features (the raw
LAI/LCC series on the 32-date grid, flattened) of the same training fields; both are scored on the held-apart
test fields (overall accuracy, per-class F1, kappa), next to the best single-date NDVI threshold rule (date
and thresholds chosen on the training fields). Mean ± std over seeds. ``--ablation`` also trains FFDNN
without its time-shift augmentation.

speed: megapixels/s of ``hsikit.pipelines.stress.stress`` over a simulated ``size``×``size`` px series of
``dates`` acquisitions: from the in-memory Dataset and from per-date GeoTIFFs (read with
``hsikit.io.timeseries.open_series``), with and without the saliency explanation; plus the bare model forward.
memory: peak RSS of ``stress`` (explanation on) over GeoTIFF series of growing size, one child process per
size: it should not grow with the scene (the series is read block by block).
Results are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def accuracy(args) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.metrics import confusion_matrix, scores
    from hsikit.pipelines.train_stress import extract_training_pixels, train_stress
    from hsikit.timeseries.filter import PhotochemicalFilter, season_grid
    from hsikit.timeseries.simulator import simulate_series, single_date_ndvi_oa
    from hsikit.training.run import RunOptions

    rows = []
    for s in range(args.seeds):
        ds = simulate_series(fields_per_class=args.fields_per_class, field_size=args.field_size, seed=1000 + s)
        runs = {}
        variants = [("ffdnn", None)] + ([("ffdnn-no-shift", 0)] if args.ablation else [])
        with tempfile.TemporaryDirectory() as tmp:
            for name, shift in variants:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = train_stress(ds, "labels", fields="fields", out=Path(tmp) / f"{name}.safetensors",
                                       epochs=args.epochs, patience=args.patience, time_shift=shift,
                                       run=RunOptions(seed=s, progress=False))
                runs[name] = {"oa": res.metrics["oa"], "kappa": res.metrics["kappa"],
                              "f1": res.metrics["per_class_f1"], "field_oa": res.metrics["fields"]["oa"],
                              "epochs": len(res.history), "seconds": time.perf_counter() - t0}
                split = res.split
            meta = read_checkpoint_meta(Path(tmp) / "ffdnn.safetensors")
        filt = PhotochemicalFilter.from_dict(meta.preprocessing)
        grid = season_grid(ds["time"].values, filt.cfg)
        x, y, f = extract_training_pixels(ds, filt, grid, ds["labels"].values.astype(np.int32),
                                          ds["fields"].values.astype(np.int32), block=256,
                                          max_pixels_per_field=None, seed=s)
        tr, te = np.isin(f, split["train"] + split["val"]), np.isin(f, split["test"])
        t0 = time.perf_counter()
        rf = RandomForestClassifier(n_estimators=500, n_jobs=-1, random_state=s).fit(x[tr].reshape(tr.sum(), -1), y[tr])
        m = scores(confusion_matrix(y[te] - 1, rf.predict(x[te].reshape(te.sum(), -1)) - 1, 3))
        runs["random-forest"] = {"oa": m["oa"], "kappa": m["kappa"], "f1": m["per_class_f1"],
                                 "seconds": time.perf_counter() - t0}
        nd = single_date_ndvi_oa(ds, train_fields=np.array(split["train"] + split["val"]))
        runs["single-date-ndvi"] = {"oa": nd["oa"], "date": nd["date"], "oracle_oa": nd["oracle_oa"]}
        row = {"seed": s, "test_fields": len(split["test"]), "test_pixels": int(te.sum()), **runs}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for name in rows[0]:
        if not isinstance(rows[0][name], dict):
            continue
        oa = np.array([r[name]["oa"] for r in rows])
        entry = {"oa_mean": float(oa.mean()), "oa_std": float(oa.std())}
        if "f1" in rows[0][name]:
            f1 = np.array([r[name]["f1"] for r in rows])
            entry["f1_mean"] = f1.mean(0).round(4).tolist()
            entry["f1_std"] = f1.std(0).round(4).tolist()
            kappa = np.array([r[name]["kappa"] for r in rows])
            entry["kappa_mean"], entry["kappa_std"] = float(kappa.mean()), float(kappa.std())
        summary[name] = entry
    print(json.dumps({"summary": summary, "seeds": args.seeds, "fields_per_class": args.fields_per_class,
                      "field_size": args.field_size, "epochs": args.epochs, "patience": args.patience,
                      "machine": _machine(), "command": " ".join(sys.argv)}), flush=True)


def _speed_model(ds, path: Path) -> Path:
    """A checkpoint with random weights and statistics fitted on ``ds`` (speed does not depend on the weights)."""
    import torch

    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.models import create_model
    from hsikit.timeseries.filter import FilterConfig, PhotochemicalFilter, read_block, season_grid
    from hsikit.timeseries.simulator import CLASS_COLORS, CLASS_NAMES

    filt = PhotochemicalFilter(FilterConfig(season_start="02-15")).resolve(list(ds["band"].values), [])
    blk = read_block(ds, slice(0, 64), slice(0, 64), filt.needed_bands(), [])
    fb = filt.filter(blk, season_grid(blk.dates, filt.cfg))
    filt.fit_statistics(fb.raw[fb.keep])
    torch.manual_seed(0)
    net = create_model("ffdnn")
    meta = CheckpointMeta(arch="ffdnn", config={"in_features": 2, "num_classes": 3, "length": 32}, task="stress",
                          preprocessing=filt.to_dict(), class_names=list(CLASS_NAMES), class_colors=list(CLASS_COLORS))
    return save_checkpoint(path, net, meta)


def speed(args) -> None:
    import torch

    from hsikit.io.timeseries import open_series
    from hsikit.models import create_model
    from hsikit.pipelines.stress import stress
    from hsikit.timeseries.simulator import simulate_series, write_series

    cells = max(1, int(np.ceil(((args.size - 1) / 17) ** 2)))
    ds = simulate_series(fields_per_class=max(1, (cells - 2) // 3), field_size=16, n_dates=args.dates, seed=0)
    ds = ds.isel(y=slice(0, args.size), x=slice(0, args.size))
    h, w = ds.sizes["y"], ds.sizes["x"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = _speed_model(ds, tmp / "m.safetensors")
        series = write_series(ds, tmp / "sim")["series"]
        for source in ("memory", "geotiff"):
            for explain in (False, True):
                src = ds if source == "memory" else open_series(series)
                t0 = time.perf_counter()
                res = stress(src, out=tmp / f"{source}_{explain}.tif", model=model, explain=explain, png=False,
                             progress=False)
                sec = time.perf_counter() - t0
                print(json.dumps({"source": source, "explain": explain, "pixels": h * w, "dates": ds.sizes["time"],
                                  "classified": res.classified, "seconds": round(sec, 2),
                                  "mpx_per_s": round(h * w / 1e6 / sec, 4),
                                  "peak_rss_mb": round(_peak_rss_mb(), 1),
                                  "machine": _machine()}), flush=True)
    net = create_model("ffdnn").eval()
    x = torch.randn(8192, 2, 32)
    with torch.no_grad():
        net(x[:512])
        t0 = time.perf_counter()
        net(x)
        sec = time.perf_counter() - t0
    print(json.dumps({"model_forward_only": True, "pixels": 8192, "seconds": round(sec, 3),
                      "mpx_per_s": round(8192 / 1e6 / sec, 4), "parameters": sum(p.numel() for p in net.parameters()),
                      "machine": _machine(), "command": " ".join(sys.argv)}), flush=True)


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM where /proc has it (ru_maxrss of a spawned child also counts the parent's
    peak before exec on Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(series: str, model: str, out: str, explain: bool) -> None:
    from hsikit.pipelines.stress import stress

    t0 = time.perf_counter()
    res = stress([series], out=out, model=model, explain=explain, png=False, progress=False)
    print(json.dumps({"pixels": res.pixels, "seconds": round(time.perf_counter() - t0, 2),
                      "peak_rss_mb": round(_peak_rss_mb(), 1)}))


def memory(args) -> None:
    """Peak RSS of ``stress`` over GeoTIFF series of growing size, each in its own process."""
    import subprocess

    from hsikit.timeseries.simulator import simulate_series, write_series

    for size in args.sizes:
        cells = max(1, int(np.ceil(((size - 1) / 17) ** 2)))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ds = simulate_series(fields_per_class=max(1, (cells - 2) // 3), field_size=16, n_dates=args.dates, seed=0)
            ds = ds.isel(y=slice(0, size), x=slice(0, size))
            model = _speed_model(ds, tmp / "m.safetensors")
            series = write_series(ds, tmp / "sim")["series"]
            del ds
            code = ("import sys, torch; sys.path.insert(0, %r); torch.set_num_threads(%d); import bench_ffdnn; "
                    "bench_ffdnn._memory_child(%r, %r, %r, %r)") % (str(Path(__file__).parent), args.threads,
                                                                     str(series), str(model), str(tmp / "map.tif"),
                                                                     not args.no_explain)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"size": size, "dates": args.dates, "explain": not args.no_explain, **row,
                              "mpx_per_s": round(row["pixels"] / 1e6 / row["seconds"], 4),
                              "command": " ".join(sys.argv)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--seeds", type=int, default=3)
    a.add_argument("--fields-per-class", type=int, default=20)
    a.add_argument("--field-size", type=int, default=10)
    a.add_argument("--epochs", type=int, default=40)
    a.add_argument("--patience", type=int, default=10)
    a.add_argument("--ablation", action="store_true")
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--dates", type=int, default=60)
    mem = sub.add_parser("memory")
    mem.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    mem.add_argument("--dates", type=int, default=60)
    mem.add_argument("--no-explain", action="store_true")
    for p in (a, s, mem):
        p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    {"accuracy": accuracy, "speed": speed, "memory": memory}[args.what](args)


if __name__ == "__main__":
    main()
