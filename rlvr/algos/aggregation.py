"""The one owner of loss aggregation: a per-token loss matrix [B, T] and a mask [B, T] -> a scalar.

Modes (`AGG_MODES`), with L = loss_mat, M = mask, n_b = sum_t M[b, t]:
    token_mean           sum_{b,t} M·L / N_tokens                      (DAPO; every token weighs the same)
    seq_mean_token_sum   sum_b (sum_t M·L) / N_seqs                    (longer answers weigh more)
    seq_mean_token_mean  sum_b (sum_t M·L / n_b) / N_seqs              (original GRPO; every answer weighs the same)
    dr_grpo              sum_{b,t} M·L / (N_rows · max_tokens)         (Dr. GRPO, arXiv:2503.20783: constant)

Gradient accumulation: when a batch is split into micro-batches, the mean of per-micro-batch means is not
the full-batch mean once micro-batches hold different token counts. Pass the *global* counts of the
full batch (`num_tokens_total` for token_mean, `num_seqs_total` for the sequence modes and dr_grpo) and
sum the micro-batch losses: the gradients then equal one full-batch call exactly.
"""
from __future__ import annotations

from typing import Callable

import torch

from rlvr.algos.registry import UnknownAlgorithmError

__all__ = ["AGG_MODES", "aggregate_loss", "check_agg_mode", "masked_mean", "masked_sum"]


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum of x where mask is true. x, mask [B, T] (mask bool or 0/1). Masked-out entries may hold NaN/inf."""
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """mean of x where mask is true; 0 where the mask is empty. x, mask [B, T]."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def _token_mean(L, M, *, num_tokens, num_seqs, num_rows, max_tokens):
    return masked_sum(L, M) / num_tokens


def _seq_mean_token_sum(L, M, *, num_tokens, num_seqs, num_rows, max_tokens):
    return masked_sum(L, M, dim=-1).sum() / num_seqs


def _seq_mean_token_mean(L, M, *, num_tokens, num_seqs, num_rows, max_tokens):
    per_seq = masked_sum(L, M, dim=-1) / M.bool().sum(-1).clamp(min=1).to(L.dtype)
    return per_seq.sum() / num_seqs


def _dr_grpo(L, M, *, num_tokens, num_seqs, num_rows, max_tokens):
    if max_tokens is None:
        raise ValueError("aggregate_loss mode 'dr_grpo' needs max_tokens (the generation budget per answer)")
    return masked_sum(L, M) / (num_rows * max_tokens)


_AGGREGATORS: dict[str, Callable[..., torch.Tensor]] = {
    "token_mean": _token_mean,
    "seq_mean_token_sum": _seq_mean_token_sum,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "dr_grpo": _dr_grpo,
}
AGG_MODES: tuple[str, ...] = tuple(_AGGREGATORS)


def check_agg_mode(mode: str) -> None:
    """An unknown mode raises UnknownAlgorithmError listing the valid ones."""
    if mode not in _AGGREGATORS:
        raise UnknownAlgorithmError(f"unknown loss aggregation mode {mode!r}; known: {', '.join(AGG_MODES)}")


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    max_tokens: int | None = None,
    *,
    num_tokens_total: int | float | torch.Tensor | None = None,
    num_seqs_total: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce loss_mat [B, T] under mask [B, T] to a scalar with `mode` (see the module docstring).

    Denominators default to this call's counts: N_tokens = sum M; N_seqs = number of rows with at least one
    unmasked token (fully masked rows, e.g. filtered overlong answers, do not dilute the mean); N_rows = B.
    `num_tokens_total` overrides N_tokens (token_mean); `num_seqs_total` overrides N_seqs and N_rows.
    A denominator of 0 is treated as 1 (an all-masked batch gives loss 0, not NaN).
    """
    check_agg_mode(mode)
    if loss_mat.shape != mask.shape or loss_mat.ndim != 2:
        raise ValueError(
            f"loss_mat and mask must both be [batch, tokens]; got {tuple(loss_mat.shape)}, {tuple(mask.shape)}"
        )
    m = mask.bool()
    num_tokens = m.sum() if num_tokens_total is None else num_tokens_total
    num_seqs = m.any(-1).sum() if num_seqs_total is None else num_seqs_total
    num_rows = loss_mat.shape[0] if num_seqs_total is None else num_seqs_total
    clamp = lambda n: torch.as_tensor(n, dtype=loss_mat.dtype, device=loss_mat.device).clamp(min=1)
    return _AGGREGATORS[mode](
        loss_mat, m,
        num_tokens=clamp(num_tokens), num_seqs=clamp(num_seqs), num_rows=clamp(num_rows), max_tokens=max_tokens,
    )
