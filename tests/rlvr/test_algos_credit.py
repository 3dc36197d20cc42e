"""Multi-turn credit assignment: hand-computed returns and advantages, loop parity, single-turn reduction."""
from __future__ import annotations

import pytest
import torch

from rlvr.algos import get_advantage, grpo_advantages
from rlvr.algos.credit import (CREDIT, discounted_returns, get_credit, group_has_signal, outcome_returns,
                               token_advantages, turn_advantages)
from rlvr.errors import ConfigError


@pytest.mark.parametrize("rewards, expected", [
    ([0.0, 1.0, 0.0, 2.0], [3.0, 3.0, 3.0, 3.0]),
    ([0.5], [0.5]),
    ([], []),
])
def test_outcome_returns_hand_values(rewards, expected):
    assert outcome_returns(rewards, gamma=0.3) == expected      # gamma is not used


@pytest.mark.parametrize("rewards, gamma, expected", [
    # G_3 = 2; G_2 = 0 + .5*2 = 1; G_1 = 1 + .5*1 = 1.5; G_0 = 0 + .5*1.5 = .75
    ([0.0, 1.0, 0.0, 2.0], 0.5, [0.75, 1.5, 1.0, 2.0]),
    ([0.0, 1.0, 0.0, 2.0], 1.0, [3.0, 3.0, 2.0, 2.0]),
    ([0.0, 1.0, 0.0, 2.0], 0.0, [0.0, 1.0, 0.0, 2.0]),
    ([0.0, 0.0, 1.0], 0.9, [0.81, 0.9, 1.0]),                  # solved on the 3rd turn
])
def test_discounted_returns_hand_values(rewards, gamma, expected):
    assert discounted_returns(rewards, gamma) == pytest.approx(expected)


def test_credit_registry():
    assert {"outcome", "per_turn"} <= set(CREDIT.names())
    assert get_credit("per_turn") is discounted_returns
    with pytest.raises(ConfigError, match="known: outcome, per_turn"):
        get_credit("nope")


def test_turn_advantages_hand_computed_dr_grpo():
    # One group of three dialogues; dr_grpo: A = G - mean over the segments with the same (group, turn).
    returns = [[1.0], [0.0, 1.0], [0.0, 0.0, 0.0]]
    adv, _ = turn_advantages(returns, [0, 0, 0], get_advantage("dr_grpo"))
    # turn 0: {1, 0, 0}, mean 1/3; turn 1: {1, 0}, mean 1/2; turn 2: singleton -> 0
    expected = torch.tensor([[2 / 3, 0, 0], [-1 / 3, 0.5, 0], [-1 / 3, -0.5, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)


def _loop_turn_advantages(returns, group_ids, scale_by_std=True, eps=1e-6):
    """Plain-loop GRPO per (group, turn) segment, for parity with the vectorised path."""
    out = [[0.0] * max(len(r) for r in returns) for _ in returns]
    keys = {(g, t) for g, r in zip(group_ids, returns) for t in range(len(r))}
    for g, t in keys:
        members = [i for i, r in enumerate(returns) if group_ids[i] == g and len(r) > t]
        vals = [returns[i][t] for i in members]
        if len(vals) < 2:
            continue
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        for i in members:
            out[i][t] = (returns[i][t] - mean) / (std + eps) if scale_by_std else returns[i][t] - mean
    return torch.tensor(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_turn_advantages_match_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n_groups, G = 3, 4
    lengths = torch.randint(1, 4, (n_groups * G,), generator=g).tolist()
    returns = [torch.randint(0, 3, (n,), generator=g).float().tolist() for n in lengths]
    group_ids = [i // G for i in range(n_groups * G)]
    adv, _ = turn_advantages(returns, group_ids, grpo_advantages)
    ref = _loop_turn_advantages(returns, group_ids)
    assert adv.shape == ref.shape
    assert torch.allclose(adv, ref, atol=1e-4), (adv, ref)


def test_one_turn_dialogues_reduce_to_the_single_turn_estimator():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    single, _ = grpo_advantages(rewards, group_ids)
    for name in ("outcome", "per_turn"):
        returns = [get_credit(name)([float(r)], 0.7) for r in rewards]
        adv, _ = turn_advantages(returns, group_ids.tolist(), grpo_advantages)
        assert torch.equal(adv[:, 0], single)


def test_token_advantages_hand_computed():
    turn_adv = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    turn_ids = torch.tensor([[0, 0, -1, -1, 1, 1, -1], [0, -1, -1, -1, -1, -1, -1]])
    expected = torch.tensor([[0.5, 0.5, 0, 0, -1.0, -1.0, 0], [2.0, 0, 0, 0, 0, 0, 0]])
    assert torch.equal(token_advantages(turn_adv, turn_ids), expected)


@pytest.mark.parametrize("returns, expected", [
    ([[1.0], [1.0], [1.0]], False),              # all equal
    ([[0.0, 0.0], [0.0, 0.0], [0.0]], False),    # equal at every turn index
    ([[0.0, 1.0], [0.0, 0.0]], True),            # spread at turn 1 only
    ([[0.0, 1.0], [0.0]], False),                # turn 1 is a singleton
    ([[1.0], [0.0]], True),
])
def test_group_has_signal(returns, expected):
    assert group_has_signal(returns) is expected
