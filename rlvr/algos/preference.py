"""Offline preference losses: DPO, IPO, SimPO, ORPO, KTO. Each returns a per-example loss [B] (no reduction).

Shapes: every `*_logps` argument is [B], one number per completion. "logps" means the log-prob of the
completion summed over its tokens; "avg_logps" means that sum divided by the number of completion tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dpo_loss", "implicit_rewards", "ipo_loss", "simpo_loss", "orpo_loss", "log_odds", "kto_loss",
           "kto_reference_point"]


def _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) -> torch.Tensor:
    """h = (π_c - ref_c) - (π_r - ref_r): how much more the policy prefers chosen than the reference does."""
    return (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Sigmoid DPO (Rafailov et al. 2023, arXiv:2305.18290), with cDPO label smoothing (Mitchell 2023).

    All inputs [B] summed logps -> loss [B]:
        h    = (π_c - ref_c) - (π_r - ref_r)
        loss = -(1-ε)·log σ(β h) - ε·log σ(-β h) = (1-ε)·softplus(-β h) + ε·softplus(β h)
    With ε = 0 the loss -> 0 as h -> +inf. softplus keeps it finite for large |β h|.
    """
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    z = beta * _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (1 - label_smoothing) * F.softplus(-z) + label_smoothing * F.softplus(z)


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO implicit reward, for metrics: policy_logps, ref_logps [B] -> β·(π - ref) [B], detached.

    rewards/chosen, rewards/rejected, rewards/margins and rewards/accuracies (chosen > rejected) follow from it.
    """
    return (beta * (policy_logps - ref_logps)).detach()


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """IPO (Azar et al. 2023, arXiv:2310.12036): regress the margin to a fixed target instead of pushing it to inf.

    All inputs [B] -> loss [B]:   loss = (h - 1/(2τ))²,   h as in DPO; zero at the fixed point h = 1/(2τ).
    Inputs are whatever the caller passes: the contract is the same as DPO (summed logps), but the paper's
    implementation and TRL use per-token *averaged* logps for IPO; choose by what you compute upstream.
    """
    if tau <= 0:
        raise ValueError(f"ipo tau must be > 0, got {tau}")
    h = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1 / (2 * tau)) ** 2


def simpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimPO (Meng et al. 2024, arXiv:2405.14734): reference-free, length-normalised, with target margin γ.

    chosen_avg_logps, rejected_avg_logps [B] -> loss [B]:
        loss = -log σ(β·(avg_c - avg_r) - γ) = softplus(γ - β·(avg_c - avg_r))
    (TRL's `gamma_beta_ratio` is γ/β.)
    """
    return F.softplus(gamma - beta * (chosen_avg_logps - rejected_avg_logps))


def log_odds(avg_logps: torch.Tensor) -> torch.Tensor:
    """avg_logps [B] (= log p, must be < 0) -> log(p / (1 - p)) = log p - log(1 - exp(log p)) [B].

    log(1 - e^x) is computed stably: log(-expm1(x)) near 0, log1p(-exp(x)) for x < -ln 2 (Mächler 2012).
    x is capped just below 0 so that p = 1 gives a large finite value, not inf.
    """
    x = avg_logps.clamp(max=-torch.finfo(avg_logps.dtype).tiny)
    log1mexp = torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
    return x - log1mexp


def orpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, chosen_nll: torch.Tensor, lam: float
) -> torch.Tensor:
    """ORPO (Hong et al. 2024, arXiv:2403.07691): SFT loss plus an odds-ratio preference term, no reference model.

    chosen_avg_logps, rejected_avg_logps [B] (per-token averaged), chosen_nll [B] (SFT NLL of the chosen
    completion, usually per-token averaged = -chosen_avg_logps) -> loss [B]:
        loss = nll + λ·(-log σ(log_odds(avg_c) - log_odds(avg_r))),   log_odds(x) = x - log(1 - e^x)
    """
    return chosen_nll + lam * F.softplus(-(log_odds(chosen_avg_logps) - log_odds(rejected_avg_logps)))


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 from mismatched (prompt, completion) pairs (Ethayarajh et al. 2024).

    policy_kl_logps, ref_kl_logps [B] summed logps of completions paired with unrelated prompts -> scalar:
        z0 = max(0, mean(π - ref)), detached (no gradient flows through the reference point).
    In distributed training, average over all ranks before the clamp.
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    is_desirable: torch.Tensor,
    kl_ref_point: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, arXiv:2402.01306): prospect-theoretic loss on unpaired good/bad examples.

    policy_logps, ref_logps [B] summed logps, is_desirable [B] bool, kl_ref_point scalar -> loss [B]:
        r  = π - ref,    z0 = max(0, kl_ref_point)  (detached)
        desirable:    w_d · (1 - σ(β (r - z0)))
        undesirable:  w_u · (1 - σ(β (z0 - r)))
    """
    r = policy_logps - ref_logps
    z0 = kl_ref_point.detach().clamp(min=0)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(is_desirable.bool(), desirable, undesirable)
