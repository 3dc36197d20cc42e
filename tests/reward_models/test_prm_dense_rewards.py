"""Dense PRM rewards in the RL trainers: step scores on step-end tokens → GRPO process advantages / PPO token
rewards (issue 7: "usable ... as dense per-step rewards placed on each step's last token for GRPO/PPO")."""
from __future__ import annotations

import json

import pytest
import torch

from rlvr.algos import grpo_advantages, process_advantages
from rlvr.rollout import get_engine
from rlvr.trainers.common import load_model_and_tokenizer
from rlvr.trainers.grpo import GRPOConfig, PromptStream, collect_batch, train_grpo
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from verifiers.base import get_verifier
from verifiers.prm import split_steps


def _task(prm_dir) -> tuple[Task, list[Example]]:
    prm = get_verifier("prm", model=str(prm_dir / "model"), how="min")
    task = Task(name="chains", loader=lambda split, limit: [], template=PromptTemplate(plain="{user}\n", chat=False),
                verifiers=[WeightedVerifier(get_verifier("integer", pick="last"), 1.0), WeightedVerifier(prm, 0.0)])
    examples = [Example(f"e{i}", f"start {i % 5}", gold=str(i % 5)) for i in range(8)]
    return task, examples


def test_prm_dense_rewards_drive_grpo_advantages(trained_prm, tmp_path):
    task, examples = _task(trained_prm[1])
    model, tok = load_model_and_tokenizer("tiny")
    engine = get_engine("hf", model=model, tokenizer=tok)
    cfg = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=20, lr=1e-4, dynamic_sampling=False,
                     eval_every=0, process_reward={"verifier": "prm", "outcome_weight": 0.5}, bf16=False)
    torch.manual_seed(0)
    batch = collect_batch(engine, task, examples, PromptStream(len(examples), 0), cfg, tok, seed=0)
    values, mask = batch.process
    assert mask.any() and not values[~mask].any()
    for i in range(len(batch.packed)):       # one step-end token per scored step
        ids = batch.packed.completion_ids[i][batch.packed.completion_mask[i]].tolist()
        text = tok.decode(ids, skip_special_tokens=True)
        assert int(mask[i].sum()) == len(split_steps(text, "newline"))
    adv, _ = batch.advantages(batch.rewards, batch.group_ids)
    expected = process_advantages(values, mask, batch.group_ids)[0] + \
        0.5 * grpo_advantages(batch.rewards, batch.group_ids)[0][:, None]
    assert adv.shape == values.shape and torch.allclose(adv, expected)

    summary = train_grpo(model, tok, engine, task, examples, cfg, out_dir=tmp_path, seed=0, log_fn=lambda s: None)
    assert summary["steps"] == 2
    rows = [json.loads(x) for x in (tmp_path / "grpo_metrics.jsonl").read_text().splitlines()]
    assert all(r["adv/steps_per_seq"] > 0 for r in rows)   # process metrics logged as adv/*


def test_prm_dense_rewards_enter_ppo_token_rewards(trained_prm, tmp_path):
    from rlvr.trainers.ppo import PPOConfig, train_ppo

    task, examples = _task(trained_prm[1])
    model, tok = load_model_and_tokenizer("tiny")
    engine = get_engine("hf", model=model, tokenizer=tok)
    cfg = PPOConfig(steps=2, prompts_per_step=4, max_new_tokens=20, eval_every=0, micro_batch=8, bf16=False,
                    process_reward={"verifier": "prm", "weight": 1.0, "centre": 0.5})
    train_ppo(model, tok, engine, task, examples, cfg, out_dir=tmp_path, seed=0, log_fn=lambda s: None)
    rows = [json.loads(x) for x in (tmp_path / "ppo_metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("reward/process_sum_mean" in r for r in rows)


def test_process_reward_needs_the_named_verifier(trained_prm):
    from rlvr.errors import ConfigError

    task, examples = _task(trained_prm[1])
    model, tok = load_model_and_tokenizer("tiny")
    cfg = GRPOConfig(prompts_per_step=1, group_size=2, max_new_tokens=8, dynamic_sampling=False,
                     process_reward={"verifier": "prm_typo"})
    with pytest.raises(ConfigError, match="no verifier 'prm_typo'"):
        collect_batch(get_engine("hf", model=model, tokenizer=tok), task, examples, PromptStream(8, 0), cfg, tok)
    with pytest.raises(ValueError, match="cannot be combined"):
        GRPOConfig(process_reward={}, env={"name": "arithmetic_retry"})
