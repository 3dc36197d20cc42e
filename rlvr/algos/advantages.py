"""Outcome-reward advantage estimators: one scalar reward per sequence in, one advantage per sequence out.

Every estimator has the signature `fn(rewards [B], group_ids [B], **options) -> (advantages [B], metrics)`.
`group_ids` is an integer tensor saying which prompt each completion answers; groups may come in any
order and have unequal sizes. A group of size 1 has no baseline, so its advantage is 0 in every estimator.
The trainer broadcasts `advantages [B]` over the response tokens. Metrics are detached 0-dim tensors
(no device sync here; the trainer calls `.item()` when it logs).
"""
from __future__ import annotations

import torch

from rlvr.algos.registry import register_advantage

__all__ = ["group_stats", "grpo_advantages", "dr_grpo_advantages", "rloo_advantages", "reinforce_pp_advantages"]


def _check(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    if rewards.ndim != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be [batch]; got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point():
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    return rewards if rewards.is_floating_point() else rewards.float()


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-element statistics of the element's group.

    rewards [B] float, group_ids [B] int -> (mean_g [B], std_g [B], size_g [B]), where std_g is the
    *unbiased* (n-1) standard deviation (as `torch.std`, TRL and verl use) and is 0 for groups of size 1.
    Two-pass (mean, then squared deviations) for numerical stability. `torch.unique` syncs on CUDA.
    """
    rewards = _check(rewards, group_ids)
    _, inv, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    zeros = rewards.new_zeros(counts.numel())
    n = counts.to(rewards.dtype)
    mean = zeros.index_add(0, inv, rewards) / n
    sq_dev = zeros.index_add(0, inv, (rewards - mean[inv]) ** 2)
    std = (sq_dev / (n - 1).clamp(min=1)).sqrt()
    return mean[inv], std[inv], counts[inv]


def _metrics(adv: torch.Tensor, std_g: torch.Tensor, size_g: torch.Tensor) -> dict[str, torch.Tensor]:
    multi = size_g > 1
    zero_std = (std_g == 0) & multi
    return {
        "advantage/mean": adv.detach().mean(),
        "advantage/std": adv.detach().std(unbiased=False),
        # completions in groups where every reward is equal: they carry no learning signal
        "advantage/zero_std_frac": zero_std.float().mean(),
        "advantage/singleton_frac": (~multi).float().mean(),
    }


@register_advantage("grpo")
def grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, scale_by_std: bool = True, std_scope: str = "group",
    eps: float = 1e-6
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO group z-score (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300).

    rewards [B], group_ids [B] -> advantages [B]:
        A_i = (r_i - mean_g) / (std_g + eps)     if scale_by_std, std_scope "group" (std_g unbiased, n-1, like TRL/verl)
        A_i = (r_i - mean_g) / (std_B + eps)     if scale_by_std, std_scope "batch": std_B is the unbiased std of
                                                 all rewards of groups of size > 1 (group mean, batch std: Liu et
                                                 al. 2025, "Tricks or Traps? A Deep Dive into RL for LLM
                                                 Reasoning"; TRL's scale_rewards="batch"): no extra weight on
                                                 near-uniform groups
        A_i =  r_i - mean_g                       otherwise
    Groups of size 1 get A = 0.
    """
    if std_scope not in ("group", "batch"):
        raise ValueError(f"std_scope must be 'group' or 'batch', got {std_scope!r}")
    mean_g, std_g, size_g = group_stats(rewards, group_ids)
    adv = _check(rewards, group_ids) - mean_g
    if scale_by_std and std_scope == "group":
        adv = adv / (std_g + eps)
    elif scale_by_std:
        pooled = _check(rewards, group_ids)[size_g > 1]
        adv = adv / ((pooled.std() if pooled.numel() > 1 else adv.new_zeros(())) + eps)
    adv = torch.where(size_g > 1, adv, torch.zeros_like(adv))
    return adv, _metrics(adv, std_g, size_g)


@register_advantage("dr_grpo")
def dr_grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dr. GRPO: group-mean baseline without the std division (Liu et al. 2025, "Understanding R1-Zero-Like
    Training", arXiv:2503.20783), which removes the question-difficulty bias of the std.

    rewards [B], group_ids [B] -> advantages [B]:  A_i = r_i - mean_g  (0 for groups of size 1).
    Pair it with the `dr_grpo` loss aggregation (constant normaliser) to also remove the length bias.
    """
    return grpo_advantages(rewards, group_ids, scale_by_std=False)


@register_advantage("rloo")
def rloo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, arXiv:2402.14740).

    rewards [B], group_ids [B] -> advantages [B]:
        A_i = r_i - mean_{j != i, j in g} r_j = G/(G-1) * (r_i - mean_g),   G = group size
    Groups of size 1 (no "others") get A = 0.
    """
    mean_g, std_g, size_g = group_stats(rewards, group_ids)
    n = size_g.to(mean_g.dtype)
    adv = n / (n - 1).clamp(min=1) * (_check(rewards, group_ids) - mean_g)
    adv = torch.where(size_g > 1, adv, torch.zeros_like(adv))
    return adv, _metrics(adv, std_g, size_g)


@register_advantage("reinforce_pp")
def reinforce_pp_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-8
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE++ with a group baseline (Hu 2025, arXiv:2501.03262; verl's "reinforce_plus_plus_baseline").

    rewards [B], group_ids [B] -> advantages [B]:
        c_i = r_i - mean_g                                   (group-mean baseline)
        A_i = (c_i - mean_batch(c)) / (std_batch(c) + eps)   (whiten over the whole batch, unbiased std)
    Groups of size 1 get A = 0. verl whitens over response *tokens* (longer answers weigh more); we whiten
    over sequences, where mean_batch(c) is 0 up to rounding because each group's c sums to 0.
    """
    mean_g, std_g, size_g = group_stats(rewards, group_ids)
    multi = size_g > 1
    centred = torch.where(multi, _check(rewards, group_ids) - mean_g, torch.zeros_like(mean_g))
    if centred.numel() > 1:
        adv = (centred - centred.mean()) / (centred.std() + eps)
    else:
        adv = torch.zeros_like(centred)
    adv = torch.where(multi, adv, torch.zeros_like(adv))
    return adv, _metrics(adv, std_g, size_g)
