"""Per-token KL estimators between the policy and a reference model, KL reward shaping, and KL coefficients.

Estimators (J. Schulman, "Approximating KL Divergence", 2020, http://joschu.net/blog/kl-approx.html), with
samples x ~ π and log r = ref_logp - logp:
    k1 = logp - ref_logp = -log r            unbiased for KL(π || ref), high variance, can be negative
    k2 = ½ (logp - ref_logp)²                biased, low variance, >= 0
    k3 = r - 1 - log r                       unbiased for KL(π || ref), low variance, >= 0
    (verl's "low_var_kl" is k3 clamped to [-10, 10]; here k3 is the plain formula: clamp in the caller if needed.)
"""
from __future__ import annotations

import torch

from rlvr.algos.aggregation import masked_mean, masked_sum
from rlvr.algos.registry import get_kl, register_kl

__all__ = ["kl_k1", "kl_k2", "kl_k3", "kl_penalty_rewards", "AdaptiveKLController", "FixedKLController"]


@register_kl("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """logp, ref_logp [B, T] -> [B, T]:  k1 = logp - ref_logp."""
    return logp - ref_logp


@register_kl("k2")
def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """logp, ref_logp [B, T] -> [B, T]:  k2 = ½ (logp - ref_logp)²."""
    return 0.5 * (logp - ref_logp) ** 2


@register_kl("k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """logp, ref_logp [B, T] -> [B, T]:  k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1  (>= 0).

    Uses expm1 so tokens where the two models agree give an accurate small value rather than rounding noise.
    """
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def kl_penalty_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL as reward shaping, as in RLHF-PPO (Ziegler et al. 2019, arXiv:1909.08593; Ouyang et al. 2022).

    scores [B] (outcome reward per sequence), logp, ref_logp, mask [B, T] -> token_rewards [B, T], metrics:
        token_rewards[b, t] = -coef · kl[b, t]             on response tokens (mask == 1), 0 elsewhere
        token_rewards[b, last_b] += scores[b]              last_b = last position with mask == 1
    A row with an empty mask gets no reward. The result is detached (rewards are not differentiated).
    Metrics: kl/seq_sum_mean (mean over sequences of the summed token KL), kl/token_mean, kl/coef.
    """
    m = mask.bool()
    with torch.no_grad():
        kl = get_kl(estimator)(logp, ref_logp)
        rewards = torch.where(m, -coef * kl, torch.zeros_like(kl))
        positions = torch.arange(m.shape[-1], device=m.device).expand_as(m)
        last = torch.where(m, positions, torch.full_like(positions, -1)).max(-1).values  # [B]
        has = last >= 0
        rows = torch.arange(m.shape[0], device=m.device)[has]
        rewards[rows, last[has]] += scores[has].to(rewards.dtype)
        metrics = {
            "kl/seq_sum_mean": masked_sum(kl, m, dim=-1).mean(),
            "kl/token_mean": masked_mean(kl, m),
            "kl/coef": torch.tensor(float(coef)),
        }
    return rewards, metrics


class FixedKLController:
    """A constant KL coefficient with the same interface as `AdaptiveKLController`."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv:1909.08593, eq. 2): steer the observed KL to `target`.

        e     = clip(current_kl / target - 1, -0.2, 0.2)     (proportional error)
        value = value · (1 + e · n_steps / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs target > 0 and horizon > 0; got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
