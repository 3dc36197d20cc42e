"""Token-level policy-gradient losses and the truncated importance-sampling (TIS) correction.

A policy loss has the signature `fn(logp, old_logp, advantages, mask, **options) -> (loss_mat [B, T], metrics)`;
it does not reduce: `aggregate_loss` owns that. Metrics are detached 0-dim tensors over unmasked tokens.
"""
from __future__ import annotations

import torch

from rlvr.algos.aggregation import masked_mean
from rlvr.algos.registry import register_policy_loss

__all__ = ["clipped_policy_loss", "gspo_policy_loss", "cispo_policy_loss", "tis_weights"]

# exp() of a log-ratio beyond this overflows float32 / explodes the loss; clamping only affects tokens whose
# ratio is already e^20 away from 1, where the clipped objective is flat anyway.
_MAX_LOG_RATIO = 20.0


def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.bool()
    if x.numel() == 0:
        return x.new_zeros(())
    top = torch.where(m, x, torch.full_like(x, float("-inf"))).max()
    return torch.where(m.any(), top, x.new_zeros(()))


def _broadcast_advantages(advantages: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    if advantages.shape == logp.shape:
        return advantages
    if advantages.ndim == 1 and advantages.shape[0] == logp.shape[0]:
        return advantages.unsqueeze(-1)
    raise ValueError(f"advantages must be [batch] or [batch, tokens] matching logp {tuple(logp.shape)}; "
                     f"got {tuple(advantages.shape)}")


def _check_clip(clip_low: float, clip_high: float, dual_clip_c: float | None) -> None:
    if not 0 <= clip_low <= 1 or clip_high < 0:
        raise ValueError(f"need 0 <= clip_low <= 1 and clip_high >= 0; got clip_low={clip_low}, clip_high={clip_high}")
    if dual_clip_c is not None and dual_clip_c <= 1:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")


def _clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip_low: float,
                       clip_high: float, dual_clip_c: float | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-min(ratio·A, clip(ratio)·A), the dual clip for A < 0, zero where mask is 0; plus the clip metrics."""
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high))
    dual_active = torch.zeros_like(mask, dtype=torch.bool)
    if dual_clip_c is not None:
        bound = -adv * dual_clip_c
        dual_active = (adv < 0) & (loss > bound)
        loss = torch.where(adv < 0, torch.minimum(loss, bound), loss)
    loss = torch.where(mask.bool(), loss, torch.zeros_like(loss))
    with torch.no_grad():
        high = (adv > 0) & (ratio > 1 + clip_high)
        low = (adv < 0) & (ratio < 1 - clip_low)
        metrics = {
            "loss/clipfrac_high": masked_mean(high.float(), mask),
            "loss/clipfrac_low": masked_mean(low.float(), mask),
            "loss/clipfrac": masked_mean((high | low).float(), mask),
            "loss/dual_clipfrac": masked_mean(dual_active.float(), mask),
            "loss/ratio_mean": masked_mean(ratio.detach(), mask),
            "loss/ratio_max": _masked_max(ratio.detach(), mask),
        }
    return loss, metrics


def _approx_kl(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(old || new) from samples of old: mean((r - 1) - log r) over unmasked tokens."""
    with torch.no_grad():
        return masked_mean(torch.expm1(log_ratio) - log_ratio, mask)


@register_policy_loss("ppo_clip")
def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv:1707.06347) with clip-higher (DAPO, Yu et al. 2025,
    arXiv:2503.14476: separate ε_low, ε_high) and optional dual clip (Ye et al. 2020, arXiv:1912.09729).

    logp, old_logp [B, T] (log-probs of the sampled tokens under the current / behaviour policy),
    advantages [B] or [B, T], mask [B, T] -> loss_mat [B, T] (0 where mask is 0), metrics:
        ratio = exp(logp - old_logp)
        L     = -min(ratio·A, clip(ratio, 1-ε_low, 1+ε_high)·A)
        L     = min(L, -c·A)   for A < 0, when dual_clip_c = c > 1 (caps the loss of a very large ratio)
    Outside the clip region the loss is constant in logp, so its gradient is 0: for A > 0 when
    ratio > 1+ε_high, for A < 0 when ratio < 1-ε_low (and, with dual clip, for A < 0 when ratio > c).
    Metrics: loss/clipfrac_high (A>0, ratio>1+ε_high), loss/clipfrac_low (A<0, ratio<1-ε_low),
    loss/clipfrac (their sum), loss/dual_clipfrac, loss/approx_kl = mean((ratio-1) - log ratio)
    (k3 estimate of KL(old || new), samples from old), loss/ratio_mean, loss/ratio_max.
    """
    _check_clip(clip_low, clip_high, dual_clip_c)
    if clip_low == 1:
        raise ValueError("ppo_clip needs clip_low < 1 (a ratio floor of 0 never clips)")
    adv = _broadcast_advantages(advantages, logp)
    log_ratio = (logp - old_logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    loss, metrics = _clipped_surrogate(torch.exp(log_ratio), adv, mask, clip_low, clip_high, dual_clip_c)
    metrics["loss/approx_kl"] = _approx_kl(log_ratio, mask)
    return loss, metrics


@register_policy_loss("gspo")
def gspo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (Zheng et al. 2025, arXiv:2507.18071): the clipped surrogate with one importance ratio per sequence,
    the geometric mean of its token ratios, in the GSPO-token form (token-level advantages allowed).

        s_i    = exp( sum_t m_it (logp_it - old_it) / sum_t m_it )                 (sequence ratio)
        s_it   = sg(s_i) · exp(logp_it - sg(logp_it))            (value s_i, gradient s_i · d logp_it)
        L_it   = -min(s_it·A_it, clip(s_it, 1-ε_low, 1+ε_high)·A_it)    (dual clip for A < 0 as in ppo_clip)
    With one advantage per sequence and `loss_agg: seq_mean_token_mean` this is the paper's sequence objective;
    its ε are ~1e-3 or smaller (paper: 3e-4 / 4e-4) because a sequence ratio moves far less than a token's. A
    clipped sequence contributes no gradient for any of its tokens. On-policy (mu = 1, old = current) every
    s_i = 1 and the gradient equals GRPO's with the same aggregation.
    Metrics as ppo_clip, with clip fractions and ratio stats of s_i counted per token; loss/approx_kl is the
    token-level k3 estimate.
    """
    _check_clip(clip_low, clip_high, dual_clip_c)
    adv = _broadcast_advantages(advantages, logp)
    m = mask.to(logp.dtype)
    token_log_ratio = (logp - old_logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    seq_log_ratio = (token_log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    ratio = torch.exp(seq_log_ratio.detach() + logp - logp.detach())           # [B, T], every token = s_i
    loss, metrics = _clipped_surrogate(ratio, adv, mask, clip_low, clip_high, dual_clip_c)
    metrics["loss/approx_kl"] = _approx_kl(token_log_ratio, mask)
    return loss, metrics


@register_policy_loss("cispo")
def cispo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 1.0,
    clip_high: float = 4.0,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CISPO (MiniMax-M1, arXiv:2506.13585): REINFORCE weighted by a clipped, stop-gradient importance ratio, so
    every token keeps a gradient (PPO's clip zeroes the gradient of clipped tokens; CISPO only bounds the weight).

        r_it = exp(logp_it - old_it),   w_it = sg(clip(r_it, 1-ε_low, 1+ε_high))
        L_it = -w_it · A_it · exp(logp_it - sg(logp_it))        (value -w·A, gradient -w·A·d logp_it)
    The paper sets no lower bound (clip_low = 1: floor 0, the default) and tunes the upper one (the default
    clip_high = 4 caps the weight at 5). dual_clip_c does not apply (the weight is already bounded).
    Metrics: loss/clipfrac_high (r > 1+ε_high), loss/clipfrac_low (r < 1-ε_low), loss/clipfrac, loss/approx_kl,
    loss/ratio_mean, loss/ratio_max, loss/weight_mean.
    """
    _check_clip(clip_low, clip_high, None)
    if dual_clip_c is not None:
        raise ValueError("cispo: dual_clip does not apply (its importance weight is already clipped); unset it")
    adv = _broadcast_advantages(advantages, logp)
    log_ratio = (logp - old_logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    with torch.no_grad():
        ratio = torch.exp(log_ratio)
        weight = ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = -weight * adv * torch.exp(logp - logp.detach())
    loss = torch.where(mask.bool(), loss, torch.zeros_like(loss))
    with torch.no_grad():
        high, low = ratio > 1 + clip_high, ratio < 1 - clip_low
        metrics = {
            "loss/clipfrac_high": masked_mean(high.float(), mask),
            "loss/clipfrac_low": masked_mean(low.float(), mask),
            "loss/clipfrac": masked_mean((high | low).float(), mask),
            "loss/approx_kl": _approx_kl(log_ratio, mask),
            "loss/ratio_mean": masked_mean(ratio, mask),
            "loss/ratio_max": _masked_max(ratio, mask),
            "loss/weight_mean": masked_mean(weight, mask),
        }
    return loss, metrics


def tis_weights(
    trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated importance-sampling weights for rollout/trainer mismatch (the sampler, e.g. vLLM, computes
    slightly different log-probs than the trainer; Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"; truncation as in IMPALA, Espeholt et al. 2018).

    trainer_logp, sampler_logp [B, T], mask [B, T] or None (metrics over all tokens) -> weights [B, T], metrics:
        w = min(exp(trainer_logp - sampler_logp), cap)        detached: a constant multiplier on the loss
    Multiply the per-token policy loss by w before aggregation. Metrics: tis/capped_frac (tokens with the
    raw ratio above cap), tis/weight_mean, tis/raw_ratio_max.
    """
    if cap <= 0:
        raise ValueError(f"tis cap must be > 0, got {cap}")
    with torch.no_grad():
        raw = torch.exp(trainer_logp - sampler_logp)
        weights = raw.clamp(max=cap)
        m = torch.ones_like(raw, dtype=torch.bool) if mask is None else mask.bool()
        metrics = {
            "tis/capped_frac": masked_mean((raw > cap).float(), m),
            "tis/weight_mean": masked_mean(weights, m),
            "tis/raw_ratio_max": _masked_max(raw, m),
        }
    return weights.detach(), metrics
