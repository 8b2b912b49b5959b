"""Checkpoints: safetensors + JSON metadata round trip, never unpickled, clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from hsikit.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint
from hsikit.errors import InputError, OutputError
from hsikit.models import create_model


def meta():
    return CheckpointMeta(arch="spectral-cnn", config={"in_bands": 6, "num_classes": 3}, task="classification",
                          bands={"names": [f"b{i}" for i in range(6)], "wavelengths": None},
                          preprocessing={"steps": [{"op": "fill_invalid", "params": {"value": 0.0}}]},
                          class_names=["a", "b", "c"], class_colors=["#ff0000", "#00ff00", "#0000ff"],
                          provenance={"seed": 1})


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    m = create_model("spectral-cnn", in_bands=6, num_classes=3)
    p = save_checkpoint(tmp_path / "m.safetensors", m, meta())
    with open(p, "rb") as f:
        head = f.read(9)
    assert head[8:9] == b"{", "safetensors layout: 8-byte length then a JSON header"
    m2, meta2 = load_checkpoint(p)
    assert meta2 == meta()
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_checkpoint_meta(p).class_names == ["a", "b", "c"]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left"


def test_overwrite_refused(tmp_path):
    m = create_model("spectral-cnn", in_bands=6, num_classes=3)
    p = save_checkpoint(tmp_path / "m.safetensors", m, meta())
    before = p.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        save_checkpoint(p, m, meta())
    assert p.read_bytes() == before
    save_checkpoint(p, m, meta(), overwrite=True)


def test_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InputError, match="not a safetensors"):
        load_checkpoint(p)
    pt = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(2)}, pt)
    with pytest.raises(InputError, match="never unpickles"):
        load_checkpoint(pt)


def test_missing_and_foreign_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(InputError, match="without hsikit metadata"):
        read_checkpoint_meta(p)


def test_weights_of_another_shape_name_the_first_mismatch(tmp_path):
    # weights saved for 5 classes under metadata that says 3: what an architecture change looks like on load
    m = create_model("spectral-cnn", in_bands=6, num_classes=5)
    p = save_checkpoint(tmp_path / "m.safetensors", m, meta())
    with pytest.raises(InputError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert "weights do not match architecture 'spectral-cnn'" in msg and "\n" not in msg
    assert "in the file" in msg and "in the architecture" in msg and "another hsikit version" in msg
