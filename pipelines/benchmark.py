"""Benchmark protocols: train and test a classifier over several seeds on a benchmark dataset; mean ± std."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hsikit.errors import OptionError
from hsikit.training.run import RunOptions

POTSDAM = "enmap_potsdam"


@dataclass
class BenchmarkResult:
    dataset: str
    model: str
    protocol: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for key in ("oa", "aa", "kappa", "train_seconds"):
            v = np.array([r[key] for r in self.runs], float)
            out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
        return out


def benchmark_classify(
    dataset: str,
    model: str,
    *,
    out: str | Path,
    protocol: str = "paper",
    seeds: int | list[int] = 5,
    data_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Train ``model`` on ``dataset`` once per seed and score the test pixels.

    ``protocol``: "paper" uses the training-sample protocol of the model's paper recipe (FreeNet 200 px/class,
    MorpMamba 25 % train / 25 % validation; baselines the generic 50 % / 20 %), re-drawn per seed;
    "published" uses the dataset's own split. EnMAP Potsdam always uses its published train/validation/test
    tile lists (a random pixel split would put test pixels beside training pixels).
    ``dataset`` is a catalogue key (``hsikit datasets list``) or "enmap_potsdam" (``data_dir`` = its folder).
    ``overrides``: train_classifier options (epochs, iterations, train, train_pixels, val, lr, ...); each run's
    pixel counts per class go to ``echo`` and its report.json.
    """
    from hsikit.io.atomic import check_output
    from hsikit.pipelines.train_classifier import train_classifier
    from hsikit.report import write_json

    if protocol not in ("paper", "published"):
        raise OptionError(f"unknown protocol {protocol!r}: paper or published")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise OptionError("give at least one seed")
    out = Path(out)
    summary_path = out / "benchmark.json"
    out.mkdir(parents=True, exist_ok=True)
    check_output(summary_path, overwrite)
    scene, labels, split = _dataset(dataset, data_dir, out, protocol)
    res = BenchmarkResult(dataset, model, protocol, out=out)
    say = echo or (lambda s: None)
    for seed in seed_list:
        t0 = time.perf_counter()
        kw = dict(overrides or {})
        run = RunOptions(device=device, overwrite=overwrite, progress=progress, seed=seed,
                         report_dir=out / f"{model}_seed{seed}_report",
                         command=f"benchmark classify {dataset} {model} seed {seed}")
        r = train_classifier(scene, labels, out=out / f"{model}_seed{seed}.safetensors", model=model,
                             model_config=model_config, split=split, protocol="paper", run=run, echo=say, **kw)
        m = r.metrics
        row = {"seed": seed, "oa": m["oa"], "aa": m["aa"], "kappa": m["kappa"],
               "per_class_accuracy": m["per_class_accuracy"], "train_seconds": time.perf_counter() - t0,
               "epochs_run": len(r.history)}
        res.runs.append(row)
        say(f"seed {seed}: OA {m['oa']:.4f}  AA {m['aa']:.4f}  kappa {m['kappa']:.4f}  ({row['train_seconds']:.0f} s)")
    write_json({"dataset": dataset, "model": model, "protocol": protocol, "seeds": seed_list,
                "overrides": overrides or {}, "model_config": model_config or {}, "runs": res.runs,
                "summary": res.summary()}, summary_path)
    return res


def _dataset(dataset: str, data_dir, out: Path, protocol: str):
    """(scene, labels, split array or None) for a dataset key."""
    if dataset == POTSDAM:
        from hsikit.pipelines.protocols import enmap_potsdam

        if data_dir is None:
            raise OptionError("enmap_potsdam needs --data-dir: the folder with images/, labels/ and *_files.csv")
        files = enmap_potsdam(data_dir, out / "_data")
        # always the published tile split, whatever the protocol: test tiles stay spatially apart from the
        # training tiles; seeds change initialisation and sampling order
        return files.scene, files.labels, files.split_array()
    if protocol == "published":
        raise OptionError(f"{dataset} has no published split here; use --protocol paper")
    from hsikit.datasets import load

    loaded = load(dataset, data_dir)
    return loaded.scene, loaded.label_map(), None
