"""Registry and classification architectures: shapes, determinism, gradients."""

from __future__ import annotations

import pytest
import torch

from hsikit.errors import OptionError
from hsikit.models import create_model, get_entry, list_models


def test_registry_lists_architectures():
    entries = {e.name: e for e in list_models()}
    assert {"spectral-cnn", "unet"} <= set(entries)
    assert all(e.task == "classification" for e in list_models("classification"))
    assert get_entry("spectral-cnn").receptive_field(get_entry("spectral-cnn").config_cls(4, 2)) == 0
    with pytest.raises(OptionError, match="unknown model"):
        create_model("nope")
    with pytest.raises(OptionError, match="no option"):
        create_model("spectral-cnn", in_bands=4, num_classes=2, depth=9)


@pytest.mark.parametrize("bands,h,w", [(7, 37, 53), (224, 5, 3), (100, 1, 1)])
def test_spectral_cnn_shapes(bands, h, w):
    m = create_model("spectral-cnn", in_bands=bands, num_classes=5).eval()
    assert m(torch.randn(2, bands, h, w)).shape == (2, 5, h, w)


@pytest.mark.parametrize("bands", [7, 224])
def test_unet_shapes(bands):
    m = create_model("unet", in_bands=bands, num_classes=6).eval()
    with torch.no_grad():
        assert m(torch.randn(1, bands, 64, 96)).shape == (1, 6, 64, 96)
    assert get_entry("unet").size_multiple == 32


@pytest.mark.parametrize("name,shape", [("spectral-cnn", (3, 12, 9, 11)), ("unet", (2, 12, 32, 32))])
def test_determinism_and_gradients(name, shape):
    torch.manual_seed(0)
    a = create_model(name, in_bands=12, num_classes=4)
    torch.manual_seed(0)
    b = create_model(name, in_bands=12, num_classes=4)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    x = torch.randn(*shape)
    a.train()
    loss = torch.nn.functional.cross_entropy(a(x), torch.randint(0, 4, (shape[0], *shape[2:])))
    loss.backward()
    missing = [n for n, p in a.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


#: names the registry used before it went kebab-case -> the current names
FORMER_NAMES = {
    "spectralgpt_base": "spectralgpt-base",
    "spectralgpt_small": "spectralgpt-small",
    "spectralgpt_tiny": "spectralgpt-tiny",
    "spectralgpt_segmenter": "spectralgpt-segmenter",
    "spectralgpt_scene_classifier": "spectralgpt-scene-classifier",
}


def test_registry_names_are_kebab_case_and_listed_once():
    import re

    from hsikit.models.registry import register_model

    names = [e.name for e in list_models()]
    assert len(names) == len(set(names))
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n)]
    assert not bad, f"registry names not in kebab-case: {bad}"
    assert not set(FORMER_NAMES) & set(names)  # aliases are not listed
    assert set(FORMER_NAMES.values()) <= set(names)
    with pytest.raises(ValueError, match="kebab-case"):
        register_model("Bad_name", task="classification", description="", inputs="", config_cls=object,
                       receptive_field=lambda cfg: 0)


@pytest.mark.parametrize("old,new", sorted(FORMER_NAMES.items()))
def test_former_names_resolve_to_the_same_entry(old, new):
    from hsikit.models.registry import make_config

    assert get_entry(old) is get_entry(new) and get_entry(old).name == new
    kw = {} if get_entry(new).task == "masked-autoencoding" else {"variant": "tiny", "num_classes": 3}
    assert make_config(old, **kw) == make_config(new, **kw)
    assert type(create_model(old, **{**kw, "variant": "tiny"})) is type(create_model(new, **{**kw, "variant": "tiny"}))


def test_checkpoint_saved_under_a_former_name_loads(tmp_path):
    from hsikit.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint

    cfg = {"variant": "tiny", "img_size": 16, "patch_size": 4, "num_classes": 3}
    torch.manual_seed(0)
    net = create_model("spectralgpt-segmenter", **cfg).eval()
    p = save_checkpoint(tmp_path / "old.safetensors", net,
                        CheckpointMeta(arch="spectralgpt_segmenter", config=cfg, task="classification"))
    assert read_checkpoint_meta(p).arch == "spectralgpt_segmenter"  # as written before the rename
    loaded, meta = load_checkpoint(p)
    assert meta.arch == "spectralgpt-segmenter" and type(loaded) is type(net)
    for (ka, a), (kb, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    x = torch.rand(1, 12, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert read_checkpoint_meta(p).arch == "spectralgpt_segmenter"  # loading leaves the file as it is
