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
