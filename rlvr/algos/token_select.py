"""Which completion tokens carry the policy-gradient loss."""
from __future__ import annotations

import torch

__all__ = ["high_entropy_mask"]


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """The top `top_fraction` of tokens by entropy ("forking tokens": Wang et al. 2025, "Beyond the 80/20 Rule",
    arXiv:2506.01939, trained on the top 20% only and matched or beat all-token updates).

    entropy [B, T] (per-token entropy of the policy), mask [B, T] -> bool [B, T]:
        τ      = quantile_{1-ρ}({H_t : m_t = 1})          (linear interpolation, over the real tokens given)
        keep_t = m_t ∧ (H_t ≥ τ)
    ρ = 1 keeps every real token; ties at τ are kept. No gradient flows through the selection.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    m = mask.bool()
    if top_fraction == 1.0 or not m.any():
        return m
    h = entropy.detach()
    tau = torch.quantile(h[m].float(), 1.0 - top_fraction)
    return m & (h >= tau.to(h.dtype))
