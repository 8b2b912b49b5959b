"""Regenerate sample_data/ deterministically: `make sample` (or `python sample_data/generate.py`).

Writes the synthetic sample scene, its labels (raster + GeoPackage polygons) and the default classifier trained
on it: FreeNet with its paper recipe (GS² sampling, 200 px/class capped at half a class, 1000 SGD iterations,
seed 2333) at half width (reduction_ratio 0.5) so the sample stays under 10 MB. The training report goes to
sample_data/_report/ (not committed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch

    from hsikit.pipelines.train_classifier import train_classifier
    from hsikit.synthetic import make_scene, write_labels, write_scene_geotiff
    from hsikit.training.run import RunOptions

    torch.set_num_threads(1)  # bit-for-bit repeatable training on CPU
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")  # fixed creation time in the model metadata
    os.environ.setdefault("OGR_CURRENT_DATE", "2026-01-01T00:00:00Z")  # and in the GeoPackage
    scene = make_scene(200, 200, seed=0)
    paths = {
        "scene": HERE / "sample_scene.tif",
        "labels": HERE / "sample_labels.tif",
        "polygons": HERE / "sample_labels.gpkg",
        "model": HERE / "sample_model.safetensors",
    }
    for p in paths.values():
        p.unlink(missing_ok=True)
    write_scene_geotiff(scene, paths["scene"])
    write_labels(scene, paths["labels"], paths["polygons"])
    res = train_classifier(paths["scene"], paths["labels"], out=paths["model"], model="freenet", protocol="paper",
                           model_config={"reduction_ratio": 0.5},
                           run=RunOptions(device="cpu", overwrite=True, report_dir=HERE / "_report",
                                          progress=sys.stderr.isatty(), command="sample_data/generate.py"))
    for name, p in paths.items():
        print(f"{name:9s} {p.relative_to(HERE.parent)}  {p.stat().st_size / 1e6:.2f} MB")
    m = res.metrics
    print(f"default model: test OA {m['oa']:.4f}, AA {m['aa']:.4f}, kappa {m['kappa']:.4f} "
          f"({res.history[-1].get('step', len(res.history))} iterations, {res.seconds:.1f} s)")


if __name__ == "__main__":
    main()
