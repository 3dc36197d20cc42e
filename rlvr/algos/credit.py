"""Multi-turn credit assignment: per-turn rewards -> per-turn returns -> per-token advantages.

A dialogue of T model turns has env rewards r_0..r_{T-1} (one per turn) and an outcome R = Σ_t r_t.
A credit scheme maps the rewards to one return per turn (`fn(turn_rewards, gamma) -> returns`):

    outcome    G_t = R = Σ_k r_k                      every turn's tokens get the final outcome
    per_turn   G_t = Σ_{k>=t} γ^(k-t) r_k              reward-to-go with turn-level discount γ

Advantages then come from the trainer's outcome estimator (grpo, rloo, ...) applied to the returns of
"segments" (dialogue i, turn t), grouped by (prompt group, turn index): turn t of a dialogue is compared with
turn t of its siblings that reached turn t. With one turn per dialogue this is exactly the single-turn
estimator. Each model token then gets its turn's advantage; env tokens get 0 (they also carry no loss).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from rlvr.algos.registry import Registry

__all__ = ["CREDIT", "register_credit", "get_credit", "outcome_returns", "discounted_returns",
           "turn_advantages", "token_advantages", "group_has_signal"]

CREDIT = Registry("credit assignment")


def register_credit(name: str):
    """Register `fn(turn_rewards: Sequence[float], gamma: float) -> list[float]` (one return per turn)."""
    return CREDIT.register(name)


def get_credit(name: str) -> Callable[[Sequence[float], float], list[float]]:
    return CREDIT.get(name)


@register_credit("outcome")
def outcome_returns(turn_rewards: Sequence[float], gamma: float = 1.0) -> list[float]:
    """G_t = R = Σ_k r_k for every turn t: the final outcome credited to every turn (γ is not used)."""
    total = float(sum(turn_rewards))
    return [total] * len(turn_rewards)


@register_credit("per_turn")
def discounted_returns(turn_rewards: Sequence[float], gamma: float = 1.0) -> list[float]:
    """G_t = Σ_{k>=t} γ^(k-t) r_k (reward-to-go, discounted per turn), computed backwards: G_t = r_t + γ G_{t+1}."""
    out, acc = [0.0] * len(turn_rewards), 0.0
    for t in range(len(turn_rewards) - 1, -1, -1):
        acc = float(turn_rewards[t]) + gamma * acc
        out[t] = acc
    return out


def turn_advantages(returns: Sequence[Sequence[float]], group_ids: Sequence[int], estimator: Callable,
                    **options) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-turn advantages from per-turn returns.

    returns: B lists (dialogue i has T_i >= 1 returns); group_ids [B] prompt group of each dialogue;
    estimator: an outcome estimator `fn(rewards [N], group_ids [N], **options) -> (adv [N], metrics)`.
    Segments (i, t) are grouped by (group_ids[i], t), so A_{i,t} = estimator over {G_{j,t} : j in group, T_j > t}.
    Returns adv [B, T_max] (0 past a dialogue's last turn) and the estimator's metrics.
    """
    B, T = len(returns), max((len(r) for r in returns), default=0)
    rows = [(i, t) for i in range(B) for t in range(len(returns[i]))]
    flat = torch.tensor([float(returns[i][t]) for i, t in rows], dtype=torch.float32)
    seg_groups = torch.tensor([int(group_ids[i]) * T + t for i, t in rows], dtype=torch.long)
    adv_flat, metrics = estimator(flat, seg_groups, **options)
    adv = torch.zeros(B, T)
    if rows:
        index = torch.tensor(rows, dtype=torch.long)
        adv[index[:, 0], index[:, 1]] = adv_flat.float()
    return adv, metrics


def token_advantages(turn_adv: torch.Tensor, turn_ids: torch.Tensor) -> torch.Tensor:
    """turn_adv [B, T], turn_ids [B, C] (the turn of each completion token, -1 for env/pad) -> adv [B, C]:
    adv[i, c] = turn_adv[i, turn_ids[i, c]] where turn_ids[i, c] >= 0, else 0."""
    if turn_adv.shape[1] == 0:
        return torch.zeros(turn_ids.shape)
    picked = turn_adv.gather(1, turn_ids.clamp(min=0))
    return torch.where(turn_ids >= 0, picked, torch.zeros_like(picked))


def group_has_signal(returns: Sequence[Sequence[float]], ndigits: int = 9) -> bool:
    """True when some turn index t has two dialogues (both with a turn t) whose returns G_t differ, i.e. the
    group-relative advantage is not 0 everywhere. Dynamic sampling drops groups without signal."""
    T = max((len(r) for r in returns), default=0)
    return any(len({round(float(r[t]), ndigits) for r in returns if len(r) > t}) > 1 for t in range(T))
