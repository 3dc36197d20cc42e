"""Dense process rewards for GRPO and PPO: a PRM verifier's per-step scores placed on each step's last token.

The task lists the PRM as a verifier (`{name: prm, weight: 0.0, options: {model: runs/prm/model}}`; weight 0
keeps it out of the outcome reward) and the trainer names it in `process_reward.verifier`. Its verdicts carry
`step_scores`; `verifiers.prm.dense_rewards` maps them onto the tokens that end the steps (same split rule).
- GRPO: advantages are DeepSeekMath's process-supervision ones (rlvr.algos.process_advantages), plus
  `outcome_weight` × the outcome estimator's advantage on every token.
- PPO: `weight` × step scores are added to the per-token rewards before GAE (the outcome stays on the last token).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from rlvr.config import Config
from rlvr.errors import ConfigError


class ProcessRewardConfig(Config):
    verifier: str = "prm"
    """name of the task's PRM verifier whose per-step scores become dense rewards"""
    weight: float = 1.0
    """PPO: step scores × weight are added to token rewards; GRPO: the process advantage × weight"""
    outcome_weight: float = 0.0
    """GRPO: plus this × the outcome advantage on every token (0: process supervision only)"""
    centre: float = 0.0
    """subtracted from each step score first (e.g. 0.5 makes a PRM probability a ± reward for PPO)"""


def _prm(task: Any, name: str):
    found = [w.verifier for w in task.verifiers if w.name == name]
    if not found:
        raise ConfigError(f"process_reward.verifier: the task has no verifier {name!r} "
                          f"(verifiers: {', '.join(w.name for w in task.verifiers)})")
    return found[0]


def step_rewards(task: Any, tokenizer: Any, rollouts: Sequence[Any], scores: Sequence[Any], cfg: ProcessRewardConfig,
                 length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, C], step_mask [B, C]): (score − centre) on each step-end token, and where those tokens are."""
    from verifiers.prm import dense_rewards

    prm = _prm(task, cfg.verifier)
    split, sep = getattr(prm, "split", "newline"), getattr(prm, "separator", None)
    values = [[p - cfg.centre for p in s.verdicts[cfg.verifier].info.get("step_scores", [])] for s in scores]
    ids = [r.completion_ids for r in rollouts]
    dense = dense_rewards(tokenizer, ids, values, split=split, separator=sep, length=length)
    ones = [[1.0] * len(v) for v in values]
    mask = dense_rewards(tokenizer, ids, ones, split=split, separator=sep, length=length) > 0
    return dense, mask


def grpo_process_advantages(values: torch.Tensor, mask: torch.Tensor, cfg: ProcessRewardConfig, outcome_fn,
                            options: dict[str, Any]):
    """The `Batch.advantages` hook for GRPO: process advantages (+ outcome_weight × outcome advantages)."""
    from rlvr.algos import process_advantages

    def fn(rewards: torch.Tensor, group_ids: torch.Tensor, **_: Any):
        adv, m = process_advantages(values, mask, group_ids)
        adv = cfg.weight * adv
        if cfg.outcome_weight:
            out, om = outcome_fn(rewards, group_ids, **options)
            adv = adv + cfg.outcome_weight * out[:, None]
            m.update(om)
        return adv, m
    return fn
