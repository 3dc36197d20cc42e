"""Refreshing the KL reference during GRPO: every N steps, θ_ref ← α·θ + (1 - α)·θ_ref.

α = 1 is a hard reset to the current policy (ProRL, Liu et al. 2025, arXiv:2505.24864: over a long run the KL
term otherwise anchors the policy to a start it has long left); α < 1 is TR-DPO's soft update (Gorbatovski et
al. 2024, arXiv:2404.09656; TRL's sync_ref_model / ref_model_mixup_alpha). The reference's weights then depend on
the run's history, so checkpoints carry them and a resumed run restores them.
"""
from __future__ import annotations

import torch

__all__ = ["mix_into", "sync_due"]


@torch.no_grad()
def mix_into(ref: torch.nn.Module, policy: torch.nn.Module, alpha: float) -> None:
    """θ_ref ← α·θ + (1 - α)·θ_ref for every parameter, matched by name (the reference is a copy of the
    policy); the reference keeps its own dtype. Buffers are left alone."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    theta = dict(policy.named_parameters())
    for name, p in ref.named_parameters():
        src = theta.get(name)
        if src is None or src.shape != p.shape:
            raise ValueError(f"reference parameter {name!r} has no same-shaped counterpart in the policy")
        if alpha == 1.0:
            p.copy_(src)
        else:
            p.mul_(1.0 - alpha).add_(src.to(device=p.device, dtype=p.dtype), alpha=alpha)


def sync_due(step: int, every: int) -> bool:
    """After optimizer step `step` (1-based): refresh when `every` > 0 divides it."""
    return every > 0 and step % every == 0
