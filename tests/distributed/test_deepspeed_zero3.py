"""DeepSpeed ZeRO-3 on 2 CPU processes reproduces the single-process run, with every parameter partitioned.

`zero3_partitioned.json` is the shipped `recipes/deepspeed/zero3.json` with `stage3_param_persistence_threshold: 0`:
the tiny model's tensors are all below the shipped 1e5-element threshold, which would keep them whole on every
rank and hide exactly what ZeRO-3 changes (every forward all-gathers the weights it uses). One launch runs:
- SFT, 3 micro-batches per step: several backward passes accumulate (see rlvr/distributed/zero3.py);
- GRPO policy_update (mu = 2, uneven micro-batch counts per rank, zero-loss fill-in backwards), with greedy
  generation through an HF engine before and after — a different number of forward passes on each rank, run
  inside `Trainable.gathered()`; the same with LoRA (the reference is the adapters-off policy);
- a PPO update of policy + separate critic, advantages whitened across ranks;
- a DPO step and a reward-model step (evals inside `gathered()`, the final model gathered for the save).
Each is compared with the one-process run (`single`, shared with test_deepspeed_zero2.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.test_deepspeed_zero2 import (HERE, _assert_same_update, _initial, _metrics, _params,
                                                    check_grpo_update, check_ppo_update, launch)
# The same DPO and reward-model checks, collected here against this module's ZeRO-3 `runs`:
from tests.distributed.test_deepspeed_zero2 import (test_dpo_step_matches_single_process,  # noqa: F401
                                                    test_reward_model_step_matches_single_process)  # noqa: F401

pytestmark = pytest.mark.distributed

ZERO3 = HERE / "zero3_partitioned.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, single) -> Path:
    root = tmp_path_factory.mktemp("zero3")
    (root / "single").symlink_to(single)
    launch("sft,grpo_update,grpo_update_lora,ppo_update,dpo,rm", root / "ds", ZERO3)
    return root


def test_sft_step_with_accumulation_matches_single_process(runs):
    """3 micro-batches per step (2 per rank): the gradient norm shows whether the earlier backwards counted."""
    from safetensors.torch import load_file
    a, b = _metrics(runs / "single" / "sft_metrics.json"), _metrics(runs / "ds" / "sft_metrics.json")
    assert b["loss/sft"][0] == pytest.approx(a["loss/sft"][0], rel=1e-5)
    assert b["grad/norm"][0] == pytest.approx(a["grad/norm"][0], rel=1e-4)
    single = _params(runs / "single" / "sft_params.safetensors")
    _assert_same_update(single, _params(runs / "ds" / "sft_params.safetensors"), _initial(), lr_steps=1e-2)
    # the checkpoint's model/ is gathered from the partitions (lm_head is tied: saved once)
    gathered = load_file(str(runs / "ds" / "sft" / "checkpoints" / "step-00000001" / "model" / "model.safetensors"))
    _assert_same_update({k: v for k, v in single.items() if k in gathered}, gathered, _initial(), lr_steps=1e-2)


def test_grpo_update_and_generation_match_single_process(runs):
    check_grpo_update(runs)


def test_grpo_update_with_lora_matches_single_process(runs):
    check_grpo_update(runs, "grpo_update_lora", lr_steps=0.0)


def test_ppo_update_matches_single_process(runs):
    check_ppo_update(runs)
