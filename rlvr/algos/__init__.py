"""RL and preference-learning formulas as small pure tensor functions (torch only; no trainer code).

    registry      register_/get_/list_ for advantage estimators, policy losses, KL estimators
    advantages    grpo, dr_grpo, rloo, reinforce_pp           rewards [B], group_ids [B] -> advantages [B]
    policy_loss   ppo_clip (clip-higher, dual clip), gspo, cispo, tis_weights    [B, T] -> loss_mat [B, T]
    aggregation   aggregate_loss + AGG_MODES: the one owner of [B, T] -> scalar reduction
    kl            k1, k2, k3, kl_penalty_rewards, Adaptive/FixedKLController
    token_select  high_entropy_mask (train on the top-ρ entropy tokens only)
    logits        logprobs_from_logits, entropy_from_logits, token_logprobs (chunked fast path)
    preference    dpo, ipo, simpo, orpo, kto (per-example losses [B])
    reward_model  bradley_terry_loss, pairs_from_ranking, reward_centering
    gae           gae_advantages, whiten
    process       process_advantages (dense per-step PRM rewards -> per-token advantages, DeepSeekMath)
    credit        outcome / per_turn returns for multi-turn dialogues, turn_advantages, token_advantages
"""
from rlvr.algos.advantages import (
    dr_grpo_advantages,
    group_stats,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from rlvr.algos.aggregation import AGG_MODES, aggregate_loss, masked_mean, masked_sum
from rlvr.algos.credit import (discounted_returns, get_credit, group_has_signal, outcome_returns, register_credit,
                               token_advantages, turn_advantages)
from rlvr.algos.gae import gae_advantages, whiten
from rlvr.algos.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalty_rewards,
)
from rlvr.algos.logits import entropy_from_logits, logprobs_from_logits, token_logprobs
from rlvr.algos.policy_loss import cispo_policy_loss, clipped_policy_loss, gspo_policy_loss, tis_weights
from rlvr.algos.process import process_advantages
from rlvr.algos.token_select import high_entropy_mask
from rlvr.algos.preference import (
    dpo_loss,
    implicit_rewards,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    log_odds,
    orpo_loss,
    simpo_loss,
)
from rlvr.algos.registry import (
    UnknownAlgorithmError,
    get_advantage,
    get_kl,
    get_policy_loss,
    list_advantages,
    list_kl,
    list_policy_losses,
    register_advantage,
    register_kl,
    register_policy_loss,
)
from rlvr.algos.reward_model import bradley_terry_loss, pairs_from_ranking, reward_centering

__all__ = [
    # registries
    "UnknownAlgorithmError", "register_advantage", "get_advantage", "list_advantages",
    "register_policy_loss", "get_policy_loss", "list_policy_losses", "register_kl", "get_kl", "list_kl",
    # advantages
    "group_stats", "grpo_advantages", "dr_grpo_advantages", "rloo_advantages", "reinforce_pp_advantages",
    "process_advantages",
    # policy loss and aggregation
    "clipped_policy_loss", "gspo_policy_loss", "cispo_policy_loss", "tis_weights", "high_entropy_mask",
    "AGG_MODES", "aggregate_loss", "masked_mean", "masked_sum",
    # KL
    "kl_k1", "kl_k2", "kl_k3", "kl_penalty_rewards", "AdaptiveKLController", "FixedKLController",
    # logits
    "logprobs_from_logits", "entropy_from_logits", "token_logprobs",
    # preference and reward model
    "dpo_loss", "implicit_rewards", "ipo_loss", "simpo_loss", "orpo_loss", "log_odds", "kto_loss",
    "kto_reference_point", "bradley_terry_loss", "pairs_from_ranking", "reward_centering",
    # GAE
    "gae_advantages", "whiten",
    # multi-turn credit
    "register_credit", "get_credit", "outcome_returns", "discounted_returns", "turn_advantages", "token_advantages",
    "group_has_signal",
]
