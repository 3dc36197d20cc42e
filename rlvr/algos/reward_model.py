"""Reward-model training losses: Bradley-Terry pairwise loss, K-wise rankings as pairs, reward centring."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bradley_terry_loss", "pairs_from_ranking", "reward_centering"]


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Bradley-Terry pairwise loss (Bradley & Terry 1952; Ouyang et al. 2022, arXiv:2203.02155; the margin as in
    Llama 2, Touvron et al. 2023). r_chosen, r_rejected [B] scalar rewards, margin scalar or [B] -> loss [B]:

        loss = -log σ(r_c - r_r - margin) = softplus(-(r_c - r_r - margin))      (softplus: no overflow)
    """
    return F.softplus(-(r_chosen - r_rejected - margin))


def pairs_from_ranking(k: int) -> torch.Tensor:
    """All C(k, 2) (better, worse) index pairs of a k-wise ranking whose index 0 is the best (InstructGPT).

    k -> LongTensor [k(k-1)/2, 2]; row (i, j) has i < j, i.e. item i is preferred to item j. Use it as
    `r[pairs[:, 0]], r[pairs[:, 1]]` to feed `bradley_terry_loss`. k = 1 gives an empty [0, 2] tensor.
    """
    if k < 1:
        raise ValueError(f"a ranking needs k >= 1 items, got {k}")
    if k == 1:
        return torch.empty(0, 2, dtype=torch.long)
    return torch.combinations(torch.arange(k), r=2)


def reward_centering(r_chosen: torch.Tensor, r_rejected: torch.Tensor, coef: float) -> torch.Tensor:
    """Auxiliary term that keeps rewards centred on 0 (Eisenstein et al. 2023, arXiv:2312.09244), since
    Bradley-Terry is invariant to a shared offset. r_chosen, r_rejected [B] -> term [B]:

        term = coef · (r_c + r_r)²          (add to the BT loss; TRL's `center_rewards_coefficient`)
    """
    return coef * (r_chosen + r_rejected) ** 2
