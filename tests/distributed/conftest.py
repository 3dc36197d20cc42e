"""The single-process reference runs shared by the DeepSpeed launch tests (computed once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest

SINGLE = ("sft", "grpo_update", "grpo_update_lora", "dpo", "ppo_update", "rm", "rm_lora", "prm",
          "online_dpo")


@pytest.fixture(scope="session")
def single(tmp_path_factory) -> Path:
    """`ds_worker.py` scenarios run in this process with plain PyTorch: what every 2-process launch must match."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    from tests.distributed.launch import load_worker

    worker = load_worker()
    root = tmp_path_factory.mktemp("single")
    for name in SINGLE:
        worker.SCENARIOS[name](root, None)
    return root
