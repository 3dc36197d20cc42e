"""Shared fixtures: where the shared data lives, and a skip when it is absent."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# One torch thread: the test models are tiny (a second thread gains nothing) and on a shared box two
# threads can be 20x slower. Subprocess-based tests inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

SHARED_DATA = Path(os.environ.get("RLVR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data dir not found at {SHARED_DATA} (set RLVR_SHARED_DATA)")
    return SHARED_DATA
