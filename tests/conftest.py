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


# ------------------------------------------------------------------------------------- parallel runs (make test)
# `make test` runs 2 pytest-xdist workers with `--dist loadgroup --no-loadscope-reorder`. Below, every test gets an
# `xdist_group`, so one work unit (run by one worker, in order) is one test module, except for these units:
# the DeepSpeed launches (each is 2 busy rank processes; their single-process references are a session fixture),
# the rollout tests (vLLM engines; the SmolLM2 conversion) and the reward-model tests (a trained PRM and RM shared
# as session fixtures, which each worker would otherwise train again).
SHARED_UNITS = {"tests/distributed/": "deepspeed", "tests/rollout/": "rollout", "tests/reward_models/": "reward_models"}
MARKED_UNITS = {"distributed": "deepspeed", "vllm": "rollout"}
# Units that take minutes, longest first (seconds in a 2-worker run: 372, 339, 296, 130, 106, 87, 47 of 1533 in all):
# they start first so that neither worker is left with one of them at the end. A worker is handed its next unit
# while it still runs the last 2 tests of its current one, so the one-test R1-mini unit goes behind the demo unit
# (on the same worker) rather than ahead of the DeepSpeed one. Units not listed follow in collection order.
# Only the order changes, never a test.
LONG_UNITS = ("deepspeed", "tests/trainers/test_ppo_dpo_demo.py", "tests/test_r1_mini.py", "rollout",
              "tests/workflow/test_workflow_run.py", "reward_models", "tests/trainers/test_train_e2e.py")


def _unit(item: pytest.Item) -> str:
    path = item.nodeid.split("::", 1)[0]
    for prefix, unit in SHARED_UNITS.items():
        if path.startswith(prefix):
            return unit
    for marker, unit in MARKED_UNITS.items():
        if item.get_closest_marker(marker) is not None:
            return unit
    return path


@pytest.hookimpl(tryfirst=True)        # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    if config.getoption("dist", "no") != "loadgroup":
        return
    first: dict[str, int] = {}
    for item in items:
        unit = _unit(item)
        first.setdefault(unit, len(first))
        item.add_marker(pytest.mark.xdist_group(unit))
    rank = {unit: i for i, unit in enumerate(LONG_UNITS)}
    items.sort(key=lambda it: (rank.get(_unit(it), len(rank)), first[_unit(it)]))
