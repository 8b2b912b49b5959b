"""Batch processing on Dask: scaling over workers, per-scene overhead, and kill-at-a-random-moment-and-resume.

    python bench/bench_batch.py [--scenes 16] [--size 192] [--kills 3] [--seed 0] [--block-mpx 4]

Generates ``--scenes`` synthetic EnMAP-like scenes (``hsikit.synthetic.make_scene``, 103 bands, ``--size`` px
square, int16 with a nodata swath edge) under ``bench/_out/batch/`` and classifies them with the bundled sample model
(FreeNet, what ``hsikit classify`` uses without ``--model``):

- ``hsikit batch classify`` with 1 and with 2 worker processes (a fresh LocalCluster each; the cores are shared
  between the workers' torch threads): wall time including cluster start-up, scaling ratio, and the per-scene
  wall times the manifest records;
- the same scenes one by one through ``hsikit classify``, one subprocess per scene, and in one Python process
  calling ``hsikit.pipelines.classify.classify`` in a loop; the batch's overhead per scene is set against both;
- ``--kills`` times: a 2-worker batch killed with SIGKILL (client, scheduler and workers) after a random delay,
  then re-run; every output must be present, readable and equal to the uninterrupted run's, every scene done
  exactly once in the manifest, and no temporary file left.

Figures are printed as JSON lines (one per measurement) and a final summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_out" / "batch"
HSIKIT = Path(sys.executable).parent / "hsikit"
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp")


def emit(d: dict) -> None:
    print(json.dumps(d), flush=True)


def make_scenes(n: int, size: int) -> Path:
    from hsikit.synthetic import make_scene, write_scene_geotiff

    d = WORK / f"scenes_{size}"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = d / f"scene_{i:02d}.tif"
        if not p.exists():
            tmp = d / f".scene_{i:02d}.tmp.tif"
            write_scene_geotiff(make_scene(size, size, seed=100 + i), tmp)
            tmp.rename(p)
    for extra in sorted(d.glob("scene_*.tif"))[n:]:
        extra.unlink()
    return d


def batch(scenes: Path, out: Path, workers: int, block_mpx: float) -> dict:
    """One ``hsikit batch classify`` run to completion; wall time and the manifest's per-scene times."""
    from hsikit.pipelines.batch import scenes_table

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    p = subprocess.run([str(HSIKIT), "-q", "batch", "classify", str(scenes), "-o", str(out), "--workers", str(workers),
                        "--block-mpx", str(block_mpx), "--no-dashboard"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    rows = scenes_table(out)
    secs = sorted(r["seconds"] for r in rows)
    return {"wall_s": round(wall, 2), "scenes": len(rows), "scene_wall_median_s": round(secs[len(secs) // 2], 3),
            "scene_wall_sum_s": round(sum(secs), 2)}


def one_by_one_subprocess(scenes: list[Path], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for s in scenes:
        subprocess.run([str(HSIKIT), "-q", "classify", str(s), "-o", str(out / s.name)], check=True,
                       capture_output=True)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "per_scene_s": round(wall / len(scenes), 3)}


def one_by_one_in_process(scenes: list[Path], out: Path) -> dict:
    """A child process that imports hsikit once and calls ``classify`` per scene (timed after the imports)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    code = ("import json, sys, time\nt0 = time.perf_counter()\nfrom hsikit.pipelines.classify import classify\n"
            "import hsikit.models, torch\nt1 = time.perf_counter()\nout = sys.argv[1]\nsecs = []\n"
            "for s in sys.argv[2:]:\n    a = time.perf_counter()\n"
            "    classify(s, out=out + '/' + s.split('/')[-1], progress=False)\n"
            "    secs.append(time.perf_counter() - a)\n"
            "print(json.dumps({'import_s': t1 - t0, 'loop_s': time.perf_counter() - t1, 'secs': secs}))\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, str(out), *map(str, scenes)], capture_output=True, text=True,
                       check=True)
    wall = time.perf_counter() - t0
    d = json.loads(p.stdout.strip().splitlines()[-1])
    secs = sorted(d["secs"])
    return {"wall_s": round(wall, 2), "import_s": round(d["import_s"], 2), "loop_s": round(d["loop_s"], 2),
            "per_scene_s": round(d["loop_s"] / len(scenes), 3), "scene_median_s": round(secs[len(secs) // 2], 3)}


def _manifest_counts(out: Path) -> dict:
    from hsikit.pipelines.manifest import Manifest

    try:
        with Manifest(out, writable=False) as m:
            return m.counts()
    except Exception:  # noqa: BLE001 - not created yet
        return {}


def kill_and_resume(scenes: Path, reference: Path, out: Path, delay: float, block_mpx: float) -> dict:
    import numpy as np
    import rasterio

    from hsikit.pipelines.batch import scenes_table
    from hsikit.pipelines.manifest import Manifest

    shutil.rmtree(out, ignore_errors=True)
    args = [str(HSIKIT), "-q", "batch", "classify", str(scenes), "-o", str(out), "--workers", "2", "--block-mpx",
            str(block_mpx), "--no-dashboard"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _manifest_counts(out)
    temps_at_kill = sum(1 for p in out.rglob("*") if p.is_file() and (TEMP_RE.match(p.name) or "/tmp/" in str(p)))
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    resume_wall = time.perf_counter() - t0
    rows = scenes_table(out)
    with Manifest(out, writable=False) as m:
        resubmitted = sum(1 for r in rows if sum(e["event"] == "submitted" for e in m.events(r["key"])) > 1)
        recovered = sum(1 for r in rows if any(e["event"] == "recovered" for e in m.events(r["key"])))
    names = sorted(s.stem for s in scenes.glob("scene_*.tif"))
    missing, invalid = [], []
    for n in names:
        got = out / f"{n}.tif"
        if not got.exists():
            missing.append(n)
            continue
        try:
            with rasterio.open(got) as a, rasterio.open(reference / f"{n}.tif") as b:
                if not np.array_equal(a.read(), b.read()):
                    invalid.append(n)
        except rasterio.errors.RasterioError:
            invalid.append(n)
    leftovers = [str(q) for q in out.rglob("*") if q.is_file() and TEMP_RE.match(q.name)]
    tmp = out / ".hsikit-batch" / "tmp"
    leftovers += [str(q) for q in tmp.rglob("*")] if tmp.exists() else []
    return {"kill_after_s": round(delay, 2), "finished_before_kill": finished_first,
            "done_at_kill": at_kill.get("done", 0),
            "unfinished_at_kill": at_kill.get("pending", 0) + at_kill.get("running", 0),
            "temp_files_at_kill": temps_at_kill, "resume_exit_code": p.returncode, "resume_wall_s": round(resume_wall, 2),
            "scenes_done": sum(r["status"] == "done" for r in rows), "missing": missing, "invalid": invalid,
            "done_exactly_once": all(r["done_events"] == 1 for r in rows) and len(rows) == len(names),
            "resubmitted": resubmitted, "recovered_without_recompute": recovered, "temp_files_left": leftovers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block-mpx", type=float, default=4.0)
    a = ap.parse_args()
    emit({"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpus": os.cpu_count(),
          "machine": platform.platform(), "python": platform.python_version(),
          "load_average_at_start": os.getloadavg()})
    scenes_dir = make_scenes(a.scenes, a.size)
    scenes = sorted(scenes_dir.glob("scene_*.tif"))
    mpx = a.scenes * a.size * a.size / 1e6

    runs = {}
    for w in (1, 2):
        runs[w] = batch(scenes_dir, WORK / f"out_{w}w", w, a.block_mpx)
        emit({"measure": f"batch_{w}_worker{'s' if w > 1 else ''}", **runs[w],
              "mpx_per_s": round(mpx / runs[w]["wall_s"], 4)})
    sub = one_by_one_subprocess(scenes, WORK / "out_subprocess")
    emit({"measure": "hsikit_classify_subprocess_per_scene", **sub})
    loop = one_by_one_in_process(scenes, WORK / "out_loop")
    emit({"measure": "classify_in_process_loop", **loop})

    rng = random.Random(a.seed)
    kills = []
    for k in range(a.kills):
        delay = rng.uniform(1.0, max(1.5, 0.9 * runs[2]["wall_s"]))
        kills.append(kill_and_resume(scenes_dir, WORK / "out_2w", WORK / f"out_kill_{k}", delay, a.block_mpx))
        emit({"measure": "kill_and_resume", "repeat": k, **kills[-1]})

    n = a.scenes
    emit({"summary": {
        "scenes": n, "size_px": a.size, "megapixels": round(mpx, 3),
        "wall_1_worker_s": runs[1]["wall_s"], "wall_2_workers_s": runs[2]["wall_s"],
        "scaling_1_to_2_workers": round(runs[1]["wall_s"] / runs[2]["wall_s"], 2),
        "subprocess_per_scene_s": sub["per_scene_s"], "in_process_per_scene_s": loop["per_scene_s"],
        "batch_1_worker_per_scene_s": round(runs[1]["wall_s"] / n, 3),
        "batch_overhead_per_scene_vs_in_process_loop_s": round((runs[1]["wall_s"] - loop["wall_s"]) / n, 3),
        "batch_overhead_per_scene_vs_subprocess_s": round((runs[1]["wall_s"] - sub["wall_s"]) / n, 3),
        "steady_state_scene_wall_batch_vs_loop_s": [runs[1]["scene_wall_median_s"], loop["scene_median_s"]],
        "kill_resume_all_valid": all(not k["missing"] and not k["invalid"] and k["done_exactly_once"]
                                     and not k["temp_files_left"] and k["resume_exit_code"] == 0 for k in kills),
        "kill_resume_repeats": len(kills),
        "load_average_at_end": os.getloadavg(),
    }})


if __name__ == "__main__":
    main()
