"""DeepSpeed ZeRO-3 on 2 CPU processes reproduces the single-process run, with every parameter partitioned.

`zero3_partitioned.json` is the shipped `recipes/deepspeed/zero3.json` with `stage3_param_persistence_threshold: 0`:
the tiny model's tensors are all below the shipped 1e5-element threshold, which would keep them whole on every
rank and hide exactly what ZeRO-3 changes (every forward all-gathers the weights it uses). One launch runs:
- SFT, 3 micro-batches per step: several backward passes accumulate (see rlvr/distributed/zero3.py);
- GRPO policy_update (mu = 2, uneven micro-batch counts per rank, zero-loss fill-in backwards), with greedy
  generation through an HF engine before and after — a different number of forward passes on each rank, run
  inside `Trainable.gathered()`; the same with LoRA (the reference is the adapters-off policy);
- a PPO update of policy + separate critic, advantages whitened across ranks;
- a DPO step, a reward-model step (also with LoRA: adapters on the trunk, the saved model merged from the
  gathered weights) and a PRM step (evals inside `gathered()`, the final model gathered for the save);
- two online-DPO (SPIN) rounds: round 1 samples from the model round 0's engine left partitioned, and its DPO round
  initialises DeepSpeed again over it.
Each is compared with the one-process run (`single`, shared with test_deepspeed_zero2.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.launch import ZERO3_PARTITIONED, run_scenarios
from tests.distributed.test_deepspeed_zero2 import (_assert_same_update, _initial, _metrics, _params,
                                                    check_grpo_update, check_ppo_update, check_reward_model_step)
# The same DPO, reward-model and PRM checks, collected here against this module's ZeRO-3 `runs`:
from tests.distributed.test_deepspeed_zero2 import (test_dpo_step_matches_single_process,  # noqa: F401
                                                    test_prm_step_matches_single_process,  # noqa: F401
                                                    test_reward_model_step_matches_single_process)  # noqa: F401

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def runs(tmp_path_factory, single) -> Path:
    root = tmp_path_factory.mktemp("zero3")
    (root / "single").symlink_to(single)
    run_scenarios("sft,grpo_update,grpo_update_lora,ppo_update,dpo,rm,rm_lora,prm,online_dpo", root / "ds",
                  ZERO3_PARTITIONED)
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


def test_lora_reward_model_step_matches_single_process(runs):
    check_reward_model_step(runs, "rm_lora")


def test_online_dpo_rounds_match_single_process(runs):
    """Two SPIN rounds: the same pairs sampled each round (so round 1's weights agreed), the same DPO step."""
    a, b = _metrics(runs / "single" / "online_dpo_metrics.json"), _metrics(runs / "ds" / "online_dpo_metrics.json")
    assert len(a["pairs"]) == 2 and all(a["pairs"]) and b["pairs"] == a["pairs"]
    assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-5)
    assert b["grad/norm"] == pytest.approx(a["grad/norm"], rel=1e-4)
    _assert_same_update(_params(runs / "single" / "online_dpo_params.safetensors"),
                        _params(runs / "ds" / "online_dpo_params.safetensors"), _initial(), lr_steps=1e-2)
