"""Log-probs and entropy from logits, without keeping a full [B, T, V] log-softmax around.

Both work in the logits' dtype: pass float32 logits when precision matters (bf16 logsumexp is coarse).
"""
from __future__ import annotations

import torch

__all__ = ["logprobs_from_logits", "entropy_from_logits"]


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits [B, T, V], tokens [B, T] (int) -> log p(tokens) [B, T].

        log p(x_t) = z[x_t] - logsumexp(z)
    A gather minus a logsumexp: only [B, T]-sized results are kept (no [B, T, V] log_softmax output).
    """
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, T, V] -> entropy of softmax(logits) [B, T].

        H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v,    p = softmax(z)
    Stable for large logits; vocabulary entries masked to -inf contribute 0 (not NaN).
    """
    p = torch.softmax(logits, dim=-1)
    pz = torch.where(p > 0, p * logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return torch.logsumexp(logits, dim=-1) - pz.sum(-1)
