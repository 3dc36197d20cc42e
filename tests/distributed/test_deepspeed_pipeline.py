"""`rlvr train` end to end under `deepspeed --num_gpus 2` (ZeRO-2, gloo on CPU): SFT → GRPO → evals on the tiny
model, 2 steps each. Checks what only a whole run shows: rank 0 alone writes the files, both ranks' prompt cursors
are checkpointed, the metrics merge both ranks' groups, and stage models are plain HF directories."""
from __future__ import annotations

import json

import pytest

from tests.distributed.launch import ZERO2, ZERO3_PARTITIONED, deepspeed_launch

pytestmark = pytest.mark.distributed

TINY = ["model.path=tiny", "model.dtype=float32", "rollout.backend=hf", "torch_threads=1", "sft.torch_threads=1",
        "task.eval_limit=2", "sft.max_steps=2", "sft.batch_size=4", "sft.eval_every=1", "sft.stop_at_pass1=null",
        "sft.examples=8",
        "grpo.steps=2", "grpo.prompts_per_step=4", "grpo.group_size=2", "grpo.max_new_tokens=6",
        "grpo.micro_batch=4", "grpo.eval_every=1", "grpo.dynamic_sampling=false", "eval.n=2", "eval.ks=[1,2]",
        "eval.max_new_tokens=6", "control.enabled=false"]


def test_pipeline_runs_on_two_ranks(tmp_path):
    deepspeed_launch(["--no_local_rank", "--module", "rlvr.cli", "train", "recipes/r1_mini.yaml",
                      f"output_dir={tmp_path}", f"distributed.deepspeed={ZERO2}", *TINY])

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["sft", "grpo"] and "pass@1_end" in summary
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "grpo_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]                         # one writer: no duplicated rows
    assert all(r["sampling/groups"] == 4 for r in rows)                # 2 groups per rank, summed
    state = json.loads((tmp_path / "grpo" / "checkpoints" / "step-00000002" / "state.json").read_text())
    assert state["world_size"] == 2 and state["cursors"] == [4, 4]     # each rank took 2 prompts per step
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(tmp_path / "grpo" / "model")  # the stage model is a plain HF dir


PPO_LORA = ["model.dtype=float32", "rollout.backend=hf", "torch_threads=1", "sft.torch_threads=1",
            "task.eval_limit=2", "sft.max_steps=1", "sft.batch_size=4", "sft.eval_every=0", "sft.stop_at_pass1=null",
            "sft.examples=8", "ppo.steps=2",
            "ppo.prompts_per_step=4", "ppo.samples_per_prompt=2", "ppo.max_new_tokens=6", "ppo.micro_batch=2",
            "ppo.minibatches=2", "ppo.eval_every=1", "ppo.entropy_coef=0.1", "ppo.bf16=false", "lora.enabled=true",
            "lora.r=4", "eval.n=2", "eval.ks=[1,2]", "eval.max_new_tokens=6"]


def test_ppo_with_lora_under_partitioned_zero3(tmp_path):
    """`rlvr train` SFT → PPO with LoRA on 2 ranks, every weight partitioned (ZeRO-3): per-rank generation and
    evals inside `gathered()`, a critic with its own adapters, stage models saved from gathered weights."""
    import torch

    deepspeed_launch(["--no_local_rank", "--module", "rlvr.cli", "train", "recipes/ppo_arithmetic.yaml",
                      f"output_dir={tmp_path}", f"distributed.deepspeed={ZERO3_PARTITIONED}", *PPO_LORA])

    rows = [json.loads(line) for line in (tmp_path / "ppo" / "ppo_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("eval/pass@1" in r for r in rows)
    ckpt = tmp_path / "ppo" / "checkpoints" / "step-00000002"
    assert json.loads((ckpt / "state.json").read_text())["world_size"] == 2
    assert (ckpt / "model" / "adapter").is_dir() and (ckpt / "model" / "critic.safetensors").exists()
    from transformers import AutoModelForCausalLM

    from rlvr.trainers.common import load_model_and_tokenizer
    sft = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model").state_dict()
    ppo = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo" / "model").state_dict()   # whole, merged
    base = load_model_and_tokenizer("tiny")[0].state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert sft[q].shape == base[q].shape and not torch.equal(ppo[q], sft[q])   # PPO's adapters merged in
