"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent) and tiny fake scenes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HSIKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config) -> None:
    # Run as a background job, the suite inherits an ignored SIGINT, which its child processes would inherit too,
    # so the tests that interrupt a command could not reach it. A handler is not inherited: children start with
    # SIGINT at its default, as when the suite runs in a terminal.
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests using it skip when it is not beside the clone."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real test data not found at {SHARED_DATA} (clone hsikit beside ../shared to run these)")
    return SHARED_DATA


@pytest.fixture
def fake_geotiff(tmp_path):
    """Factory writing a small georeferenced hyperspectral GeoTIFF; see tests/fakedata.py."""
    from fakedata import write_fake_geotiff

    def make(name: str = "scene.tif", **kwargs):
        return write_fake_geotiff(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    the models' test tensors are tiny, and on a shared 2-core box extra spinning threads made them many times
    slower. The previous setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SAMPLE = ROOT / "sample_data"


def _sample_digests() -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(_SAMPLE.iterdir()) if p.is_file()}


def pytest_sessionstart(session):
    session.config._hsikit_sample = _sample_digests()


def pytest_sessionfinish(session, exitstatus):
    """The committed sample data is an input of many tests: a test that writes into it (e.g. an evaluation
    stored in the sample model) fails the run."""
    before = getattr(session.config, "_hsikit_sample", None)
    if before is None:
        return
    changed = sorted(n for n, d in _sample_digests().items() if before.get(n) != d)
    if changed:
        tw = session.config.get_terminal_writer()
        tw.line()
        tw.line(f"sample_data changed by the tests: {', '.join(changed)}", red=True)
        session.exitstatus = 1
