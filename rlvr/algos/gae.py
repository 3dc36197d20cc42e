"""Generalised advantage estimation for token-level PPO, and masked whitening."""
from __future__ import annotations

import math
from typing import Callable

import torch

from rlvr.algos.aggregation import masked_sum

__all__ = ["gae_advantages", "whiten"]


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, arXiv:1506.02438). rewards, values, mask [B, T] -> (advantages, returns) [B, T].

    Over the response tokens t_1 < t_2 < ... < t_n of a row (mask == 1; padding on either side, or holes, are
    skipped, so "next" means the next response token) and V(after the last token) = 0:
        δ_k = r_{t_k} + γ·V_{t_{k+1}} - V_{t_k}
        A_k = δ_k + γλ·A_{k+1}                      (A_{n+1} = 0)
        returns = A + V
    Rewards at masked positions are ignored; advantages and returns are 0 there. Computed without grad.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.ndim != 2:
        raise ValueError(f"rewards, values, mask must all be [batch, tokens]; got "
                         f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}")
    m = mask.bool()
    with torch.no_grad():
        adv = torch.zeros_like(values)
        next_value = values.new_zeros(values.shape[0])
        next_adv = values.new_zeros(values.shape[0])
        for t in reversed(range(values.shape[1])):  # T is the response length; each step is [B]-vectorised
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            a = delta + gamma * lam * next_adv
            on = m[:, t]
            adv[:, t] = torch.where(on, a, torch.zeros_like(a))
            next_value = torch.where(on, values[:, t], next_value)
            next_adv = torch.where(on, a, next_adv)
        returns = torch.where(m, adv + values, torch.zeros_like(adv))
    return adv, returns


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8,
    all_sum: Callable[[float], float] | None = None,
) -> torch.Tensor:
    """Normalise x [B, T] to unit variance over mask [B, T] (None = all entries); 0 where mask == 0.

        n = Σ m,   mean = Σ m·x / n,   var = Σ m·(x - mean)² / (n - 1)      (unbiased, as TRL/verl)
        y = (x - mean) / sqrt(var + eps)
        if not shift_mean:  y = y + mean          (rescale only; keeps the sign structure of x)

    all_sum: Σ over ranks of a number (`DistContext.all_sum`): n and both sums then run over every rank's
    entries, so N ranks holding the rows of one batch whiten exactly as one process holding them all (two small
    collectives). None: this x alone. The sums are taken in float64; mean and var are constants (no gradient).
    """
    total = all_sum or (lambda v: v)
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    n = total(int(m.sum()))
    if n < 2:
        raise ValueError(f"whiten needs at least 2 unmasked entries, got {int(n)}")
    xd = x.detach().double()
    mean = total(float(masked_sum(xd, m))) / n
    var = total(float(masked_sum((xd - mean) ** 2, m))) / (n - 1)
    y = (x - mean) / math.sqrt(var + eps)
    if not shift_mean:
        y = y + mean
    return torch.where(m, y, torch.zeros_like(y))
