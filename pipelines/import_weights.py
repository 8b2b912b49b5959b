"""``hsikit import-weights``: a paper's published weights into an hsikit checkpoint (safetensors + metadata)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsikit.errors import OptionError


@dataclass
class ImportResult:
    """What was imported and what hsikit inferred along the way."""

    checkpoint: Path
    arch: str
    config: dict[str, Any]
    notes: list[str]
    tensors: int
    parameters: int


def import_weights(arch: str, source: str | Path, *, out: str | Path, overrides: dict[str, Any] | None = None,
                   wavelengths: str | None = None, name: str | None = None, overwrite: bool = False,
                   text_embeddings: str | Path | None = None, command: str | None = None) -> ImportResult:
    """Convert ``source`` (an official checkpoint of ``arch``) into the hsikit checkpoint ``out``.

    The configuration is inferred from the tensor shapes; ``overrides`` (``--set``) replace inferred values.
    ``wavelengths`` names the band grid the weights were trained on (a known grid, ``FIRST:LAST:STEP``, a list or
    a file; default: the paper's). ``text_embeddings``: MP-HSIR's table of task-prompt text embeddings (``.npz``).
    Every tensor must map: a partial import fails naming the first tensor left.
    """
    from hsikit.checkpoint import CheckpointMeta, checkpoint_sha256, save_checkpoint
    from hsikit.io.atomic import check_output
    from hsikit.io.outputs import check_suffix
    from hsikit.models.registry import create_model, make_config
    from hsikit.weights import ReadTracker, check_complete, get_importer
    from hsikit.weights.grids import band_grid
    from hsikit.weights.read import read_weights

    out = Path(out)
    check_output(check_suffix(out, (".safetensors",), what="a safetensors checkpoint"), overwrite)
    imp = get_importer(arch)
    src = Path(source)
    extra = {"text_embeddings": text_embeddings} if text_embeddings is not None else {}
    for key in extra:
        if key not in imp.extra_inputs:
            raise OptionError(f"--{key.replace('_', '-')} is for {', '.join(_taking(key))} weights, not {arch}")
    found = read_weights(src)
    cfg, notes = imp.infer(found.tensors)
    for key, value in (overrides or {}).items():
        if cfg.get(key) != value:
            notes.append(f"--set {key}={json.dumps(value)} (inferred: {json.dumps(cfg.get(key))})")
        cfg[key] = value
    model = imp.model or arch
    try:
        config = make_config(model, **cfg)
    except (TypeError, ValueError) as e:
        raise OptionError(f"{arch}: {e}") from None
    net = create_model(model, **cfg)
    source = ReadTracker(found.tensors)
    converted, dropped = imp.convert(source, cfg, **extra) if imp.extra_inputs else imp.convert(source, cfg)
    expected = net.state_dict()
    check_complete(converted, expected, found.tensors, source.read | set(dropped), src.name)
    known = imp.band_grid(cfg) if callable(imp.band_grid) else imp.band_grid
    grid = band_grid(wavelengths if wavelengths is not None else known)
    if grid is not None and cfg.get("in_bands") not in (None, grid[0].count):
        raise OptionError(f"--wavelengths: {grid[1]} is {grid[0].count} bands, the weights take "
                          f"{cfg['in_bands']}")
    net.load_state_dict({k: converted[k].to(expected[k].dtype) for k in expected}, strict=True)
    if dropped:
        notes.append(f"dropped {len(dropped)} tensor(s) the official forward does not use or hsikit recomputes: "
                     f"{', '.join(dropped[:4])}" + (" …" if len(dropped) > 4 else ""))
    if grid is not None:
        notes.append(f"trained on {grid[1]}")
    provenance = {
        "source_file": src.name, "source_sha256": checkpoint_sha256(src), "official": imp.official,
        "paper": imp.paper, "container": found.container, "prefixes_removed": found.prefixes,
        "inferred": notes, "command": command, "name": name or src.stem,
    }
    for key, path in extra.items():
        provenance[f"{key}_file"], provenance[f"{key}_sha256"] = Path(path).name, checkpoint_sha256(path)
    meta = CheckpointMeta(
        arch=model, config=_jsonable(dataclasses.asdict(config)), task=imp.task,
        bands=grid[0].to_dict() if grid is not None else None,
        preprocessing=imp.preprocessing(cfg) if imp.preprocessing is not None else None,
        class_names=_class_names(imp, cfg) if imp.task == "classification" else None,
        restoration={"scaling": imp.value_scaling, "imported": True, "clamp_output": False}
        if imp.task in ("denoising", "super-resolution", "restoration") else None,
        provenance=provenance,
    )
    save_checkpoint(out, net, meta, overwrite=overwrite)
    return ImportResult(out, model, meta.config, notes, len(found.tensors),
                        int(sum(p.numel() for p in net.parameters())))


def _taking(key: str) -> list[str]:
    from hsikit.weights import importers

    return [i.arch for i in importers() if key in i.extra_inputs]


def _class_names(imp, cfg: dict[str, Any]) -> list[str]:
    if imp.class_names is not None:
        return list(imp.class_names(cfg))
    return [f"class_{i + 1}" for i in range(int(cfg["num_classes"]))]


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=lambda v: list(v) if isinstance(v, (tuple, set)) else str(v)))
