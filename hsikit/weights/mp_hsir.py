"""MP-HSIR (Wu et al., 2025), official repository ZhehuiWu/MP-HSIR: ``MP_HSIR_Net`` (Lightning checkpoints).

hsikit's MP-HSIR has the official layers under its own names (``encoder_level1`` -> ``enc1``,
``gobal_spectral_attn`` -> ``globl``, ``cross_transformer.norm11`` -> ``norm_text``…). Two things differ:

- the official per-level ``text_linear`` and ``clip_linear`` (two ``Linear(512, D)``, never called in forward)
  become hsikit's parity-only ``text_projection`` (``Linear(512, 2D)``): the two stacked, text first;
- the official network encodes its task sentences with CLIP ViT-B/32 when it is built and keeps the 512-d
  embeddings out of its state dict. hsikit cannot run CLIP, so the table is an input of the import (one row
  per task prompt, :func:`read_text_table`) and becomes the model's ``text_embeddings`` buffer; without it the
  import is refused, since any other table (hsikit's MiniLM rows, the synthetic ones) gives wrong outputs.

The configuration comes from the shapes: ``in_bands = band_grid`` from the embedding convolution, ``dim`` from
its width, ``blocks``/``refinement`` from the block indices, ``heads`` and ``window`` from the relative position
bias tables, ``compress`` from the spectral prompts' rank, ``prompt_len`` from the prompt bank, ``tasks`` from
the per-task text prompts and ``text_dim`` from ``clip_linear``.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsikit.errors import InputError
from hsikit.weights.base import Importer, Tensors, register_importer

if TYPE_CHECKING:
    import torch

#: official encoder/decoder stacks -> hsikit's BaseBlock attributes
_STACKS = {"encoder_level1": "enc1", "encoder_level2": "enc2", "latent": "latent", "decoder_level2": "dec2",
           "decoder_level1": "dec1", "refinement": "refine"}
#: official single layers -> hsikit's
_LAYERS = {"patch_embed.proj": "embed", "down1_2.body.0": "down1.0", "down2_3.body.0": "down2.0",
           "up3_2.body.0": "up2.0", "reduce_chan_level2": "reduce2", "up2_1.body.0": "up1.0", "output": "out"}
#: inside one PGSST block: official sub-name -> hsikit sub-name (None: a buffer hsikit recomputes)
_BLOCK = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias", "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
    "attn.relative_position_bias_table": "attn.relative_position_bias_table",
    "attn.qkv.weight": "attn.qkv.weight", "attn.qkv.bias": "attn.qkv.bias", "attn.proj.weight": "attn.proj.weight",
    "attn.proj.bias": "attn.proj.bias",
    "gobal_spectral_attn.temperature": "globl.temperature", "gobal_spectral_attn.qkv.weight": "globl.qkv.weight",
    "gobal_spectral_attn.qkv_dwconv.weight": "globl.qkv_dw.weight",
    "gobal_spectral_attn.project_out.weight": "globl.project_out.weight",
    "local_spectral_attn.linear_prompt.weight": "local.prompt_weights.weight",
    "local_spectral_attn.linear_down.weight": "local.reduce.weight",
    "local_spectral_attn.linear_up.weight": "local.expand.weight",
    "local_spectral_attn.q.weight": "local.query.weight", "local_spectral_attn.kv.weight": "local.kv.weight",
    "local_spectral_attn.proj.weight": "local.proj.weight", "local_spectral_attn.proj.bias": "local.proj.bias",
    "attn_mask": None, "attn.relative_position_index": None,
}
#: TVSP (``promptN.``): official -> hsikit (the reshaped text prompts and the stacked projections: see convert)
_TVSP = {
    "visual_prompt": "visual_prompt",
    "cross_transformer.norm11.body.weight": "norm_text.weight", "cross_transformer.norm11.body.bias": "norm_text.bias",
    "cross_transformer.norm12.body.weight": "norm_visual.weight",
    "cross_transformer.norm12.body.bias": "norm_visual.bias",
    "cross_transformer.attn.temperature": "attn.temperature", "cross_transformer.attn.q.weight": "attn.q.weight",
    "cross_transformer.attn.q_dwconv.weight": "attn.q_dw.weight", "cross_transformer.attn.kv.weight": "attn.kv.weight",
    "cross_transformer.attn.kv_dwconv.weight": "attn.kv_dw.weight",
    "cross_transformer.attn.project_out.weight": "attn.project_out.weight",
    "cross_transformer.norm2.body.weight": "norm_ffn.weight", "cross_transformer.norm2.body.bias": "norm_ffn.bias",
    "cross_transformer.ffn.project_in.weight": "ffn.project_in.weight",
    "cross_transformer.ffn.dwconv.weight": "ffn.dwconv.weight",
    "cross_transformer.ffn.project_out.weight": "ffn.project_out.weight",
    "conv_last.weight": "conv.weight",
}
#: PromptFusion (``fusionN.``): official -> hsikit
_FUSION = {
    "transformer.norm1.body.weight": "norm1.weight", "transformer.norm1.body.bias": "norm1.bias",
    "transformer.attn.temperature": "attn.temperature", "transformer.attn.qkv.weight": "attn.qkv.weight",
    "transformer.attn.qkv_dwconv.weight": "attn.qkv_dw.weight",
    "transformer.attn.project_out.weight": "attn.project_out.weight",
    "transformer.norm2.body.weight": "norm2.weight", "transformer.norm2.body.bias": "norm2.bias",
    "transformer.ffn.project_in.weight": "ffn.project_in.weight", "transformer.ffn.dwconv.weight": "ffn.dwconv.weight",
    "transformer.ffn.project_out.weight": "ffn.project_out.weight", "conv.weight": "proj.weight",
}

#: the 100-band grid every remote-sensing scene is interpolated to by the reference (400-1000 nm)
REMOTE_WAVELENGTHS = tuple(float(w) for w in np.linspace(400.0, 1000.0, 100))
#: the same grid as ``--wavelengths`` FIRST:LAST:STEP (100 bands, 6.06 nm apart)
REMOTE_GRID_SPEC = "400:1000:6.06060606060606"


def _shape(t: Tensors, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in t[key].shape)
    except KeyError:
        raise InputError(f"not an MP-HSIR (MP_HSIR_Net) state dict: no {key}") from None


def _block_count(t: Tensors, stack: str) -> int:
    ids = {int(m.group(1)) for k in t if (m := re.match(rf"{stack}\.blocks\.(\d+)\.", k))}
    if not ids:
        raise InputError(f"not an MP-HSIR (MP_HSIR_Net) state dict: no {stack}.blocks")
    return max(ids) + 1


def infer(t: Tensors) -> tuple[dict[str, Any], list[str]]:
    from hsikit.models.mp_hsir import NATURAL_TASKS, REMOTE_TASKS, TASK_VOCABULARY

    dim, bands = _shape(t, "patch_embed.proj.weight")[:2]
    counts = {s: _block_count(t, s) for s in _STACKS}
    for enc, dec in (("encoder_level1", "decoder_level1"), ("encoder_level2", "decoder_level2")):
        if counts[enc] != counts[dec]:
            raise InputError(f"MP-HSIR with {counts[enc]} {enc} but {counts[dec]} {dec} blocks: hsikit's decoders "
                             "mirror their encoder level")
    levels = ("encoder_level1", "encoder_level2", "latent")
    tables = [_shape(t, f"{s}.blocks.0.attn.relative_position_bias_table") for s in levels]
    window = (math.isqrt(tables[0][0]) + 1) // 2
    ranks = [_shape(t, f"{s}.blocks.0.local_spectral_attn.linear_down.weight")[0] for s in levels]
    prompt_len = _shape(t, "encoder_level1.blocks.0.local_spectral_attn.linear_prompt.weight")[0]
    hidden = _shape(t, "encoder_level1.blocks.0.mlp.fc2.weight")[1]
    n_tasks = _shape(t, "prompt1.text_prompt_learnable")[1]
    text_dim = _shape(t, "prompt1.clip_linear.weight")[1]
    expansion = 2.66 if int(dim * 2.66) == hidden else (hidden + 0.5) / dim
    notes = []
    if n_tasks == len(NATURAL_TASKS):
        tasks, what = list(NATURAL_TASKS), "the natural-scene model (ARAD + ICVL, 400-700 nm)"
    elif n_tasks == len(REMOTE_TASKS):
        tasks, what = list(REMOTE_TASKS), "the remote-sensing model (8 scenes resampled to 100 bands, 400-1000 nm)"
    elif 1 <= n_tasks <= len(TASK_VOCABULARY):
        tasks, what = list(TASK_VOCABULARY[:n_tasks]), "an unpublished configuration"
        notes.append(f"{n_tasks} task prompts: names guessed as {tasks}; give the real order with --set tasks=[...]")
    else:
        raise InputError(f"MP-HSIR with {n_tasks} task prompts: hsikit knows {len(TASK_VOCABULARY)} tasks")
    cfg: dict[str, Any] = {
        "in_bands": bands, "band_grid": bands, "dim": dim, "tasks": tasks,
        "blocks": [counts[s] for s in levels], "refinement": counts["refinement"],
        "heads": [tb[1] for tb in tables], "window": window, "expansion": expansion, "prompt_len": prompt_len,
        "compress": [max(1, c // r) for c, r in zip((dim, 2 * dim, 4 * dim), ranks)], "text_dim": text_dim,
        # the official module broadcasts each sample's text vector against the whole batch's CLIP vectors, so
        # one sample's text map holds the others'; hsikit builds it per sample unless --set asks
        "reference_batch_mixing": False, "reference_text_projection": True, "band_resampling": "linear",
    }
    notes.insert(0, f"MP-HSIR, {what}: {bands} bands, dim {dim}, blocks {cfg['blocks']} + refinement "
                    f"{cfg['refinement']}, heads {cfg['heads']}, window {window}, spectral prompts of rank {ranks[0]}, "
                    f"tasks {', '.join(tasks)}; text map per sample (--set reference_batch_mixing=true for the "
                    "reference's batch mixing)")
    return cfg, notes


def _grid(cfg: dict[str, Any]) -> str | None:
    """The published models' band grids; a network resampling another sensor's bands (``--set in_bands=N``)
    needs that sensor's wavelengths from ``--wavelengths``."""
    if cfg.get("in_bands") != cfg.get("band_grid"):
        return None
    return {31: "icvl", 100: REMOTE_GRID_SPEC}.get(int(cfg["in_bands"]))


def read_text_table(source: Any, tasks: list[str], text_dim: int) -> "torch.Tensor":
    """The (T, text_dim) float32 text embeddings for ``tasks`` from an ``.npz`` table (``embeddings``: one row per
    task prompt, in the official task order or picked by ``names``; optional ``sha256`` of the float32 bytes),
    or from an array already in memory."""
    import torch

    name = Path(source).name if isinstance(source, (str, Path)) else "the text table"
    if isinstance(source, (str, Path)):
        try:
            with np.load(source, allow_pickle=False) as z:
                if "embeddings" not in z.files:
                    raise InputError(f"{name} has no 'embeddings' array (it holds {', '.join(z.files) or 'nothing'})")
                emb = np.asarray(z["embeddings"])
                names = [str(s) for s in z["names"]] if "names" in z.files else None
                digest = str(z["sha256"]) if "sha256" in z.files else None
        except (OSError, ValueError) as e:
            raise InputError(f"{name} is not a readable .npz text table ({' '.join(str(e).split())[:100]})") from None
    else:
        emb, names, digest = np.asarray(source), None, None
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating):
        raise InputError(f"{name}: embeddings must be a 2-D float array (one row per task prompt), got "
                         f"{emb.dtype} {emb.shape}")
    if digest is not None and hashlib.sha256(emb.astype("<f4").tobytes()).hexdigest() != digest:
        raise InputError(f"{name}: the embeddings do not match the table's sha256")
    if emb.shape[1] != text_dim:
        raise InputError(f"{name}: rows are {emb.shape[1]}-d, the weights need {text_dim}-d text embeddings (the "
                         "official model's CLIP ViT-B/32 encode_text of each task prompt)")
    if names is not None:
        missing = [task for task in tasks if task not in names]
        if missing:
            raise InputError(f"{name} has no row for task {missing[0]!r} (it names {', '.join(names)})")
        emb = np.stack([emb[names.index(task)] for task in tasks])
    elif emb.shape[0] != len(tasks):
        raise InputError(f"{name}: {emb.shape[0]} rows for {len(tasks)} task prompts ({', '.join(tasks)}); give one "
                         "row per task in the model's order, or a 'names' array")
    if not np.all(np.isfinite(emb)):
        raise InputError(f"{name}: the embeddings hold NaN or infinite values")
    return torch.as_tensor(np.ascontiguousarray(emb, dtype=np.float32))


def convert(t: Tensors, cfg: dict[str, Any], text_embeddings: Any = None) -> tuple[Tensors, list[str]]:
    """hsikit's state dict from the official tensors and the text table (a ``.npz`` path or a (T, E) array)."""
    import torch

    if text_embeddings is None:
        raise InputError("MP-HSIR checkpoints do not hold their CLIP text embeddings: give the table with "
                         f"--text-embeddings TABLE.npz ({len(cfg['tasks'])} x {cfg['text_dim']}, one row per task "
                         "prompt); hsikit will not run the weights with any other table")
    out: Tensors = {"text_embeddings": read_text_table(text_embeddings, list(cfg["tasks"]), int(cfg["text_dim"]))}
    dropped: list[str] = []
    for key in list(t.keys()):
        m = re.match(r"(\w+)\.blocks\.(\d+)\.(.+)$", key)
        if m and m.group(1) in _STACKS and m.group(3) in _BLOCK:
            new = _BLOCK[m.group(3)]
            if new is None:
                dropped.append(key)
            else:
                out[f"{_STACKS[m.group(1)]}.blocks.{m.group(2)}.{new}"] = t[key]
            continue
        if m and m.group(1) in _STACKS and m.group(3) == "local_spectral_attn.prompt_param":
            out[f"{_STACKS[m.group(1)]}.blocks.{m.group(2)}.local.spectral_prompts"] = t[key].reshape(
                t[key].shape[-2:])
            continue
        for old, new in _LAYERS.items():
            if key.startswith(old + "."):
                out[new + key[len(old):]] = t[key]
                break
        else:
            m = re.match(r"(prompt|fusion)(\d)\.(.+)$", key)
            if m and m.group(3) in (_TVSP if m.group(1) == "prompt" else _FUSION):
                table = _TVSP if m.group(1) == "prompt" else _FUSION
                out[f"{m.group(1)}{m.group(2)}.{table[m.group(3)]}"] = t[key]
            elif m and m.group(1) == "prompt" and m.group(3) == "text_prompt_learnable":
                v = t[key]  # (1, T, D, 1, 1)
                out[f"prompt{m.group(2)}.text_prompts"] = v.reshape(v.shape[1], v.shape[2])
    # never used in forward: kept (stacked) only so that every official parameter has a place
    for level in ("1", "2"):
        parts = [f"prompt{level}.{p}.{w}" for w in ("weight", "bias") for p in ("text_linear", "clip_linear")]
        if all(p in t for p in parts):
            out[f"prompt{level}.text_projection.weight"] = torch.cat([t[parts[0]], t[parts[1]]], dim=0)
            out[f"prompt{level}.text_projection.bias"] = torch.cat([t[parts[2]], t[parts[3]]], dim=0)
    return out, dropped


IMPORTER = register_importer(Importer(
    arch="mp-hsir",
    official="https://github.com/ZhehuiWu/MP-HSIR",
    paper="Wu, Chen, Yokoya, He: MP-HSIR: A Multi-Prompt Framework for Universal Hyperspectral Image Restoration, "
          "arXiv 2503.09131, 2025",
    extra_inputs=("text_embeddings",),
    task="restoration",
    infer=infer,
    convert=convert,
    band_grid=_grid,
    notes=("values scaled to [0, 1] by each scene's min and max, as the reference tests",
           "the CLIP ViT-B/32 text embeddings of the task prompts are an input of the import (--text-embeddings)"),
))
