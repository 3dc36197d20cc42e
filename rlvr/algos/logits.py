"""Log-probs and entropy from logits, without keeping a full [B, T, V] log-softmax around.

`logprobs_from_logits` / `entropy_from_logits` work in the logits' dtype: pass float32 logits when precision
matters (bf16 logsumexp is coarse). `token_logprobs` is the trainer's fast path: it takes logits in any dtype
(bf16 under autocast), works on float32 copies of a few rows at a time, and never materialises a [N, V] float32
tensor, forward or backward.
"""
from __future__ import annotations

import torch

__all__ = ["logprobs_from_logits", "entropy_from_logits", "token_logprobs"]


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


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float = 1.0,
                   with_entropy: bool = False, chunk_elems: int = 1 << 20
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits [N, V] (any float dtype), tokens [N] -> float32 log p(tokens) [N] and entropy [N] (or None).

        z = logits / T,   log p(x) = log_softmax(z)[x],   H = -sum_v p_v log p_v
        d log p(x) / d logits_v = (1[v = x] - p_v) / T,     d H / d logits_v = -p_v (log p_v + H) / T
    Same values as `logprobs_from_logits` / `entropy_from_logits` on `logits.float() / T`, but computed
    `chunk_elems // V` rows at a time in float32 (~4 MB: the chunk stays in cache across the few fused passes;
    the backward recomputes p per chunk from the saved logits and logsumexp), so the only [N, V] tensors are the
    caller's logits and their gradient, both in the logits' dtype. Under bf16 autocast this removes the float32
    copy of the logits and its softmax/backward buffers (measured: ~4x less time than that path on one core).
    """
    return _TokenLogprobs.apply(logits, tokens, float(temperature), bool(with_entropy), int(chunk_elems))


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, tokens, temperature, with_entropy, chunk_elems):  # noqa: D102 (see token_logprobs)
        n, v = logits.shape
        rows = max(1, chunk_elems // max(1, v))
        tok = tokens.long().reshape(n, 1)
        logp = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logp)
        ent = torch.empty_like(logp) if with_entropy else None
        for s in range(0, n, rows):
            z = _scaled(logits[s:s + rows], temperature)                       # [r, V] float32
            # log p(x) = z_x - logsumexp(z): no [r, V] log-softmax is written (half the passes of one)
            lse[s:s + rows] = torch.logsumexp(z, dim=-1)
            logp[s:s + rows] = z.gather(1, tok[s:s + rows]).squeeze(1) - lse[s:s + rows]
            if ent is not None:  # H = logsumexp(z) - sum_v p_v z_v; masked (-inf) entries have p = 0, add 0
                p = torch.softmax(z, dim=-1)
                ent[s:s + rows] = lse[s:s + rows] - torch.linalg.vecdot(p, z.clamp(min=torch.finfo(torch.float32).min))
        ctx.save_for_backward(logits, tok, lse, ent if ent is not None else lse)
        ctx.temperature, ctx.rows, ctx.with_entropy = temperature, rows, with_entropy
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):  # noqa: D102 (see token_logprobs)
        logits, tok, lse, ent = ctx.saved_tensors
        if not ctx.with_entropy:
            g_ent = None
        grad = torch.empty_like(logits)
        rows, t = ctx.rows, ctx.temperature
        for s in range(0, logits.shape[0], rows):
            sl = slice(s, s + rows)
            buf = logits[sl].to(torch.float32, copy=True)                      # [r, V] scratch
            if t != 1.0:
                buf.div_(t)
            buf.sub_(lse[sl, None])                                          # log p_v
            if g_ent is None:
                g = buf.exp_()                                               # p_v
                g.mul_(-g_logp[sl, None] if g_logp is not None else 0.0)
            else:  # p_v * (-g_lp - g_H (log p_v + H)), with 0 log 0 = 0
                buf.clamp_(min=torch.finfo(torch.float32).min)
                p = buf.exp()
                g_lp = g_logp[sl, None] if g_logp is not None else 0.0
                g = buf.mul_(-g_ent[sl, None]).sub_(g_lp + g_ent[sl, None] * ent[sl, None]).mul_(p)
            if g_logp is not None:
                g.scatter_add_(1, tok[sl], g_logp[sl, None])
            if t != 1.0:
                g.div_(t)
            grad[sl] = g
        return grad, None, None, None, None


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """float32 logits / T; never writes into `logits` (`.float()` of a float32 tensor is the tensor itself)."""
    z = logits.float()
    return z / temperature if temperature != 1.0 else z
