"""Process supervision (dense per-step rewards) as advantages, DeepSeekMath sec. 4.1.3 (arXiv:2402.03300).

Each completion i of a group has step rewards r_{i,1..K_i} placed on the tokens that end its steps. They are
normalised over ALL step rewards of the group, and a token's advantage is the sum of the normalised rewards of
the steps that end at or after it:

    r̃_{i,j} = (r_{i,j} − mean(R_g)) / (std(R_g) + eps),     R_g = every step reward in group g
    Â_{i,t} = Σ_{j : end(j) ≥ t} r̃_{i,j}

std is the unbiased (n−1) one, as in the outcome estimators (rlvr.algos.advantages); a group with a single step
reward has std 0, so its r̃ is 0.
"""
from __future__ import annotations

import torch

__all__ = ["process_advantages"]


def process_advantages(step_rewards: torch.Tensor, step_mask: torch.Tensor, group_ids: torch.Tensor,
                       eps: float = 1e-6) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """step_rewards [B, C] (values on step-end tokens), step_mask [B, C] bool (True on step-end tokens),
    group_ids [B] int -> (advantages [B, C], metrics). Tokens after the last step end get advantage 0."""
    if step_rewards.shape != step_mask.shape or step_rewards.ndim != 2 or group_ids.shape != step_rewards.shape[:1]:
        raise ValueError(f"step_rewards/step_mask must be [B, C] and group_ids [B]; got {tuple(step_rewards.shape)}, "
                         f"{tuple(step_mask.shape)}, {tuple(group_ids.shape)}")
    mask = step_mask.bool()
    norm = torch.zeros_like(step_rewards, dtype=torch.float32)
    for g in torch.unique(group_ids):
        rows = group_ids == g
        vals = step_rewards[rows][mask[rows]].float()
        if vals.numel() == 0:
            continue
        mean = vals.mean()
        std = vals.std(unbiased=True) if vals.numel() > 1 else vals.new_zeros(())
        z = torch.where(mask[rows], (step_rewards[rows].float() - mean) / (std + eps), 0.0)
        norm[rows] = z if vals.numel() > 1 else torch.zeros_like(z)
    adv = norm.flip(-1).cumsum(-1).flip(-1)          # suffix sums: Σ over step ends at or after t
    return adv, {"process/steps_per_seq": mask.float().sum(-1).mean(),
                 "process/step_reward_mean": step_rewards[mask].float().mean() if mask.any()
                 else step_rewards.new_zeros(())}
