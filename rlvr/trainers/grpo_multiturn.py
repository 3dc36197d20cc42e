"""GRPO's batch for multi-turn dialogues (`grpo.env` set): dialogues -> PackedBatch + per-token credit.

What differs from the single-turn batch (rlvr.trainers.grpo.collect_batch):
- a row is one whole dialogue: prompt = the first observation, completion = model turns and env feedback;
  `completion_mask` (the loss mask) is 1 only on model tokens, `completion_attention` on every real token;
- the sequence reward is the dialogue's outcome R = Σ_t r_t; advantages are per token (`TurnCredit`): the
  credit scheme (grpo.env.credit) turns turn rewards into per-turn returns, the configured estimator
  compares turn t with turn t of the group's other dialogues, and each model token gets its turn's advantage;
- dynamic sampling drops a group when no turn index has any spread in returns (all advantages would be 0);
- overlong handling looks at the last model turn: `mask` drops dialogues whose last turn hit max_new_tokens,
  `penalty` adds the soft penalty of that turn's length to the last turn's reward.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rlvr.algos import get_advantage
from rlvr.algos.credit import get_credit, group_has_signal, token_advantages, turn_advantages
from rlvr.envs.base import make_env
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.multiturn import Dialogue, dialogue_metrics, rollout_dialogues
from rlvr.trainers.common import pack

__all__ = ["TurnCredit", "collect_multiturn_batch", "pack_dialogues"]


@dataclass
class TurnCredit:
    """Per-token advantages of a multi-turn batch; `policy_update` calls it in place of the outcome estimator.

    turn_rewards: B lists of r_t; outcomes [B] = Σ_t r_t; turn_ids [B, C] turn of each completion token (-1: env
    or pad). A reward shaping applied by the trainer to the sequence reward (KL in reward: rewards - outcomes)
    is added to the last turn's reward before the returns are computed.
    """

    turn_rewards: list[list[float]]
    outcomes: torch.Tensor
    turn_ids: torch.Tensor
    credit: Callable[[list[float], float], list[float]]
    gamma: float
    estimator: Callable

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor, **options: Any
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shaped = (rewards.float() - self.outcomes).tolist()
        trs = [r[:-1] + [r[-1] + s] for r, s in zip(self.turn_rewards, shaped)]
        returns = [self.credit(r, self.gamma) for r in trs]
        adv, metrics = turn_advantages(returns, group_ids.tolist(), self.estimator, **options)
        return token_advantages(adv, self.turn_ids), metrics


def pack_dialogues(dialogues: list[Dialogue], pad_id: int):
    """(PackedBatch with loss mask = model tokens and attention = all real tokens, turn_ids [B, C],
    sampler log-probs [B, C])."""
    packed = pack([d.prompt_ids for d in dialogues], [d.completion_ids for d in dialogues], pad_id)
    B, C = packed.completion_ids.shape
    turn_ids = torch.full((B, C), -1, dtype=torch.long)
    loss = torch.zeros((B, C), dtype=torch.bool)
    logp = torch.zeros((B, C))
    for i, d in enumerate(dialogues):
        n = len(d.completion_ids)
        turn_ids[i, :n] = torch.tensor(d.turn_ids, dtype=torch.long)
        loss[i, :n] = torch.tensor(d.loss_mask, dtype=torch.bool)
        logp[i, :n] = torch.tensor(d.logprobs, dtype=torch.float32)
    packed.completion_attention = packed.completion_mask.clone()
    packed.completion_mask = packed.completion_mask & loss
    return packed, turn_ids, logp


def collect_multiturn_batch(engine, task, examples, stream, cfg, tokenizer, seed: int = 0):
    """Sample G dialogues per prompt with the env, keep groups with signal (dynamic sampling), pack them."""
    from rlvr.trainers.grpo import Batch, soft_overlong_penalty

    env_cfg = cfg.env
    make = make_env(env_cfg.name, task=task, tokenizer=tokenizer, max_turns=env_cfg.max_turns,
                    options=env_cfg.options)
    credit = get_credit(env_cfg.credit)
    kept: list[list[Dialogue]] = []
    seen: list[Dialogue] = []
    n_groups, dropped, t_gen = 0, 0, 0.0
    for rnd in range(cfg.max_sampling_rounds if cfg.dynamic_sampling else 1):
        params = SamplingParams(n=cfg.group_size, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                                seed=seed * 1000 + rnd)
        exs = [examples[i] for i in stream.take(cfg.prompts_per_step - len(kept))]
        t0 = time.time()
        groups = rollout_dialogues(engine, make, exs, params, max_turns=env_cfg.max_turns,
                                   max_tokens=env_cfg.max_tokens, tokenizer=tokenizer)
        t_gen += time.time() - t0
        for group in groups:
            n_groups += 1
            seen += group
            if cfg.overlong == "penalty":
                for d in group:
                    d.turn_rewards[-1] += soft_overlong_penalty(sum(t == d.num_turns - 1 for t in d.turn_ids),
                                                                cfg.max_new_tokens, cfg.overlong_buffer)
            if cfg.dynamic_sampling and not group_has_signal([credit(d.turn_rewards, env_cfg.gamma) for d in group]):
                dropped += 1
                continue
            kept.append(group)
        if len(kept) >= cfg.prompts_per_step:
            break
    outcomes = [d.outcome for d in seen]
    metrics = {"reward/mean": statistics.fmean(outcomes), "reward/std": statistics.pstdev(outcomes),
               **dialogue_metrics(seen, env_cfg.max_turns),
               "sampling/groups": n_groups, "sampling/dropped_groups": dropped, "sampling/kept_groups": len(kept),
               "time/generate_s": t_gen}
    if not kept:
        return Batch(None, torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 0), metrics)
    dialogues = [d for g in kept for d in g]
    packed, turn_ids, sampler_logp = pack_dialogues(dialogues, tokenizer.pad_token_id)
    if cfg.overlong == "mask":
        trunc = torch.tensor([d.turn_finish[-1] == "length" for d in dialogues])
        packed.completion_mask &= ~trunc[:, None]
    rewards = torch.tensor([d.outcome for d in dialogues], dtype=torch.float32)
    group_ids = torch.arange(len(kept)).repeat_interleave(cfg.group_size)
    advantages = TurnCredit([list(d.turn_rewards) for d in dialogues], rewards.clone(), turn_ids, credit,
                            env_cfg.gamma, get_advantage(cfg.advantage))
    return Batch(packed, rewards, group_ids, sampler_logp, metrics, advantages=advantages)
