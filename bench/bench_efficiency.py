"""How well each registered network's eval forward uses the CPU, against an fp32 GEMM timed in the same process.

    python bench/bench_efficiency.py
    python bench/bench_efficiency.py --models hsdt morpmamba
    python bench/bench_efficiency.py --quick  (tiny inputs, one repeat: a smoke test, not a measurement)

Machine rate: ``torch.mm`` of two fp32 2048×2048 matrices, one warm-up, the minimum of 5 timings, as
2·2048³ / t GFLOP/s. Per row of :data:`ROWS`: the model from ``create_model(name, **config)`` in eval mode with
random weights (``torch.manual_seed(0)``) on a fixed random input in [0, 1); FLOPs of one forward from
``torch.utils.flop_counter.FlopCounterMode``; time = minimum of ``--repeats`` forwards after one warm-up, under
``torch.inference_mode``. GFLOP/s = FLOPs / time; share = GFLOP/s over the GEMM rate; Mpx/s = input pixels
(N×H×W for image models; windows, series or spectra otherwise) per second. Every measurement uses ``--threads``
torch threads (default 2).

FlopCounterMode counts matrix products, convolutions and attention only: elementwise work (activations, norms,
the selective scan of MorpMamba, the RBF exponentials of the SVM) and FFTs count 0, so a model heavy in them
shows a low share although the CPU is busy. The random forest does no counted FLOPs (its GFLOP columns are
n/a). The SVM computes its kernels in float64, so its share compares float64 work with the fp32 GEMM.
The SVM and the random forest need fitted buffers: they get random ones of a realistic size (2000 support
vectors; 200 complete trees of depth ``RF_DEPTH``). Prints one JSON line per row, then a Markdown table sorted
by share and the GEMM rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import torch

GEMM_N = 2048
GEMM_REPEATS = 5
#: depth of the random complete trees given to the random forest (4095 splits, 4096 leaves per tree)
RF_DEPTH = 12

#: label -> model (registry name), config (create_model keywords), input shape, quick input shape and call:
#: "forward" net(x); "patches" net.forward_patches(x) on P×P windows; "task" net(x, task ids) with the task
#: bound as the restore pipeline does; "mae" the MAE forward at its configured mask ratio with a fixed mask seed.
#: The SpectralGPT inputs are their default configs' 12 bands × img_size 128.
ROWS: dict[str, dict[str, Any]] = {
    "freenet": {"model": "freenet", "config": {"in_bands": 103, "num_classes": 9},
                "input": [1, 103, 256, 256], "quick": [1, 103, 32, 32], "call": "forward"},
    "essaformer": {"model": "essaformer", "config": {"in_bands": 31, "dim": 64, "scale": 4},
                   "input": [1, 31, 32, 32], "quick": [1, 31, 8, 8], "call": "forward"},
    "mp-hsir": {"model": "mp-hsir", "config": {"in_bands": 31, "dim": 32}, "task": "gaussian",
                "input": [1, 31, 64, 64], "quick": [1, 31, 32, 32], "call": "task"},
    "ffdnn": {"model": "ffdnn", "config": {"in_features": 2, "length": 32, "num_classes": 3},
              "input": [1024, 2, 32], "quick": [16, 2, 32], "call": "forward"},
    "spectral-cnn": {"model": "spectral-cnn", "config": {"in_bands": 103, "num_classes": 9},
                     "input": [1, 103, 64, 64], "quick": [1, 103, 8, 8], "call": "forward"},
    "hsdt": {"model": "hsdt", "config": {"variant": "s", "in_bands": 31},
             "input": [1, 31, 64, 64], "quick": [1, 31, 16, 16], "call": "forward"},
    "morpmamba": {"model": "morpmamba", "config": {"in_bands": 15, "num_classes": 15},
                  "input": [256, 15, 4, 4], "quick": [8, 15, 4, 4], "call": "patches"},
    # the default training recipe (hsikit/training/recipes.py): 30 PCA components, 1×1 morphology
    "morpmamba (recipe)": {"model": "morpmamba", "config": {"in_bands": 30, "num_classes": 15, "kernel": 1},
                           "input": [256, 30, 4, 4], "quick": [8, 30, 4, 4], "call": "patches"},
    "unet": {"model": "unet", "config": {"in_bands": 103, "num_classes": 9},
             "input": [1, 103, 256, 256], "quick": [1, 103, 32, 32], "call": "forward"},
    "spectralgpt-base": {"model": "spectralgpt-base", "config": {},
                         "input": [1, 12, 128, 128], "quick": [1, 12, 32, 32], "call": "mae"},
    "spectralgpt-small": {"model": "spectralgpt-small", "config": {},
                          "input": [1, 12, 128, 128], "quick": [1, 12, 32, 32], "call": "mae"},
    "spectralgpt-tiny": {"model": "spectralgpt-tiny", "config": {},
                         "input": [1, 12, 128, 128], "quick": [1, 12, 32, 32], "call": "mae"},
    "spectralgpt-segmenter": {"model": "spectralgpt-segmenter", "config": {},
                              "input": [1, 12, 128, 128], "quick": [1, 12, 32, 32], "call": "forward"},
    "spectralgpt-scene-classifier": {"model": "spectralgpt-scene-classifier", "config": {},
                                     "input": [1, 12, 128, 128], "quick": [1, 12, 32, 32], "call": "forward"},
    "svm": {"model": "svm", "config": {"in_bands": 103, "num_classes": 9, "n_support": 2000, "gamma": 0.1},
            "input": [1, 103, 64, 64], "quick": [1, 103, 8, 8], "call": "forward"},
    "random-forest": {"model": "random-forest",
                      "config": {"in_bands": 103, "num_classes": 9, "n_trees": 200, "max_nodes": 2**RF_DEPTH - 1,
                                 "max_leaves": 2**RF_DEPTH},
                      "input": [1, 103, 64, 64], "quick": [1, 103, 8, 8], "call": "forward"},
}


def gemm_gflops(n: int = GEMM_N, repeats: int = GEMM_REPEATS) -> float:
    """fp32 ``torch.mm`` rate of two n×n matrices: one warm-up, the minimum of ``repeats`` timings."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _fill_svm(net: torch.nn.Module) -> None:
    """Random support vectors and dual coefficients, the support vectors split evenly over the classes."""
    g = torch.Generator().manual_seed(0)
    n_sv, n_cls = net.support_vectors.shape[0], net.n_support.shape[0]
    counts = torch.full((n_cls,), n_sv // n_cls, dtype=torch.int64)
    counts[: n_sv % n_cls] += 1
    net.support_vectors.copy_(torch.rand(net.support_vectors.shape, generator=g, dtype=torch.float64))
    net.dual_coef.copy_(torch.randn(net.dual_coef.shape, generator=g, dtype=torch.float64))
    net.intercept.copy_(torch.randn(net.intercept.shape, generator=g, dtype=torch.float64))
    net.n_support.copy_(counts)


def _fill_forest(net: torch.nn.Module) -> None:
    """Complete trees in heap order: split n has children 2n+1 and 2n+2, the last level being the leaves."""
    g = torch.Generator().manual_seed(0)
    t, m = net.feature.shape
    child = torch.arange(m)
    left, right = 2 * child + 1, 2 * child + 2
    # heap ids >= m are leaves, encoded as ~(leaf index)
    left, right = torch.where(left < m, left, ~(left - m)), torch.where(right < m, right, ~(right - m))
    net.children_left.copy_(left.to(torch.int32).expand(t, m))
    net.children_right.copy_(right.to(torch.int32).expand(t, m))
    net.feature.copy_(torch.randint(0, net.cfg.in_bands, (t, m), generator=g, dtype=torch.int32))
    # inputs are uniform in [0, 1), so uniform thresholds send pixels down both branches
    net.threshold.copy_(torch.rand(t, m, generator=g, dtype=torch.float64))
    value = torch.rand(net.value.shape, generator=g)
    net.value.copy_(value / value.sum(-1, keepdim=True))
    net._cache = None


def build(row: dict[str, Any]) -> tuple[torch.nn.Module, Callable[[torch.Tensor], Any]]:
    """The eval-mode network of ``row`` and the call that runs its inference forward on an input."""
    from hsikit.models.registry import create_model

    torch.manual_seed(0)
    # frozen parameters: FlopCounterMode's module tracker fails under inference_mode on modules that are handed a
    # parameter that requires grad as input (MP-HSIR's visual prompt)
    net = create_model(row["model"], **row["config"]).eval().requires_grad_(False)
    with torch.no_grad():
        if row["model"] == "svm":
            _fill_svm(net)
        elif row["model"] == "random-forest":
            _fill_forest(net)
    call = row["call"]
    if call == "forward":
        return net, net
    if call == "patches":
        return net, net.forward_patches
    if call == "task":
        idx = net.task_index(row["task"])
        return net, lambda x: net(x, torch.full((x.shape[0],), idx, dtype=torch.long))
    if call == "mae":
        # a fresh generator per call: every forward hides the same tokens, so every call does the same work
        return net, lambda x: net(x, generator=torch.Generator().manual_seed(0))
    raise ValueError(f"unknown call {call!r}")


def measure(label: str, row: dict[str, Any], shape: list[int], repeats: int, gemm: float) -> dict[str, Any]:
    """One JSON row: FLOPs, best time, GFLOP/s, share of the GEMM rate and Mpx/s of ``row`` on ``shape``."""
    from torch.utils.flop_counter import FlopCounterMode

    _, fn = build(row)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            fn(x)
        flops = counter.get_total_flops()
        fn(x)  # warm-up
        seconds = min(_seconds(lambda: fn(x)) for _ in range(repeats))
    # windows, series: one "pixel" per sample; images: N×H×W
    pixels = shape[0] if row["call"] == "patches" or len(shape) != 4 else shape[0] * shape[2] * shape[3]
    gflops = flops / seconds / 1e9 if flops else None
    return {"model": row["model"], "label": label, "input": shape, "config": row["config"],
            "gflop": flops / 1e9 if flops else None, "seconds": seconds, "gflops": gflops,
            "share": gflops / gemm if gflops is not None else None, "mpx_s": pixels / seconds / 1e6,
            "gemm_gflops": gemm, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpus": os.cpu_count()}


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``rows`` sorted by share of the GEMM rate, highest first (n/a last)."""
    lines = ["| model | input | GFLOP | GFLOP/s | share of GEMM rate | Mpx/s |", "|---|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: -1.0 if r["share"] is None else r["share"], reverse=True):
        lines.append(f"| {r['label']} | {'×'.join(map(str, r['input']))} | {_fmt(r['gflop'], '.3g')} | "
                     f"{_fmt(r['gflops'], '.3g')} | {_fmt(r['share'], '.1%')} | {r['mpx_s']:.3g} |")
    return "\n".join(lines)


def select(names: list[str] | None) -> list[str]:
    """Row labels named by ``names`` (a label, or a registry name: all its rows), in :data:`ROWS` order."""
    if names is None:
        from hsikit.models.registry import list_models

        missing = sorted({e.name for e in list_models()} - {r["model"] for r in ROWS.values()})
        if missing:
            raise SystemExit(f"registered models without a row in ROWS: {', '.join(missing)}")
        return list(ROWS)
    unknown = [n for n in names if not any(n in (label, r["model"]) for label, r in ROWS.items())]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; available: {', '.join(ROWS)}")
    return [label for label, r in ROWS.items() if label in names or r["model"] in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="row labels or registry names (default: all rows)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny inputs, a 512² GEMM and 1 repeat (smoke test only)")
    ap.add_argument("--json", default=None, help="also write all rows to this file as a JSON list")
    a = ap.parse_args()
    labels = select(a.models)
    torch.set_num_threads(a.threads)
    n = 512 if a.quick else GEMM_N
    gemm = gemm_gflops(n)
    repeats = 1 if a.quick else a.repeats
    rows = []
    for label in labels:
        row = ROWS[label]
        try:
            r = measure(label, row, row["quick"] if a.quick else row["input"], repeats, gemm)
        except Exception:
            print(f"bench_efficiency: row {label!r} ({row['model']}) failed", file=sys.stderr)
            raise
        rows.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(table(rows))
    print()
    print(f"GEMM rate: {gemm:.1f} GFLOP/s (fp32 torch.mm {n}×{n} @ {n}×{n}, min of {GEMM_REPEATS}, "
          f"{a.threads} threads, torch {torch.__version__}{', --quick' if a.quick else ''})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
