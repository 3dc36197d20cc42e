"""Sandbox test fixtures: backends in each configuration this machine supports, shut down after the module."""
from __future__ import annotations

import shutil

import pytest

from sandbox.local import LocalBackend, LocalOptions

CONFIGS = {
    "bwrap-warm": LocalOptions(mode="warm", bwrap="on", workers=2),
    "plain-warm": LocalOptions(mode="warm", bwrap="off", workers=2),
    "bwrap-fresh": LocalOptions(mode="fresh", bwrap="on", workers=2),
}


def _make(config: str) -> LocalBackend:
    if CONFIGS[config].bwrap == "on" and shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed (apt-get install bubblewrap)")
    backend = LocalBackend(CONFIGS[config])
    backend.layers()
    return backend


@pytest.fixture(scope="module", params=list(CONFIGS))
def config_backend(request):
    """The local backend in each configuration: bubblewrap + warm zygotes, no bubblewrap, fresh per job."""
    backend = _make(request.param)
    yield backend
    backend.shutdown()


@pytest.fixture(scope="module")
def backend():
    """The default configuration (auto-detected layers, warm zygotes)."""
    b = LocalBackend(LocalOptions(workers=2))
    yield b
    b.shutdown()
