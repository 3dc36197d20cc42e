"""GAE vs a plain loop and a hand-computed example, under left/right padding and holes; whiten."""
import math

import pytest
import torch

from rlvr.algos import gae_advantages, whiten


def loop_gae(rewards, values, mask, gamma, lam):
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        idx = [t for t in range(T) if mask[b][t]]
        last = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            v_next = values[b][idx[k + 1]] if k + 1 < len(idx) else 0.0
            delta = rewards[b][t] + gamma * v_next - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
            ret[b][t] = last + values[b][t]
    return adv, ret


# hand computation, γ = 0.9, λ = 0.8, r = [0, 0, 1], V = [0.5, 0.6, 0.7]:
#   δ2 = 1 - 0.7 = 0.3                         A2 = 0.3
#   δ1 = 0.9·0.7 - 0.6 = 0.03                  A1 = 0.03 + 0.72·0.3 = 0.246
#   δ0 = 0.9·0.6 - 0.5 = 0.04                  A0 = 0.04 + 0.72·0.246 = 0.21712
HAND_ADV = [0.21712, 0.246, 0.3]
HAND_RET = [0.71712, 0.846, 1.0]


def test_hand_computed_1x3():
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.6, 0.7]], dtype=torch.float64)
    adv, ret = gae_advantages(r, v, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert adv[0].tolist() == pytest.approx(HAND_ADV)
    assert ret[0].tolist() == pytest.approx(HAND_RET)


@pytest.mark.parametrize("mask_row", [[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [1, 0, 1, 0, 1]])
def test_padding_and_holes_are_skipped(mask_row):
    # the same 3 response tokens placed at different positions; garbage at masked positions must not leak
    pos = [t for t, m in enumerate(mask_row) if m]
    r = torch.full((1, 5), 9.0, dtype=torch.float64)
    v = torch.full((1, 5), -7.0, dtype=torch.float64)
    for k, t in enumerate(pos):
        r[0, t], v[0, t] = [0.0, 0.0, 1.0][k], [0.5, 0.6, 0.7][k]
    adv, ret = gae_advantages(r, v, torch.tensor([mask_row]), gamma=0.9, lam=0.8)
    assert [adv[0, t].item() for t in pos] == pytest.approx(HAND_ADV)
    assert [ret[0, t].item() for t in pos] == pytest.approx(HAND_RET)
    off = [t for t in range(5) if t not in pos]
    assert all(adv[0, t] == 0 and ret[0, t] == 0 for t in off)


@pytest.mark.parametrize("seed", range(5))
def test_matches_loop_on_random_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 9
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0] = False  # an empty row
    gamma, lam = 0.97, 0.9
    adv, ret = gae_advantages(r, v, mask, gamma, lam)
    adv_l, ret_l = loop_gae(r.tolist(), v.tolist(), mask.tolist(), gamma, lam)
    assert torch.allclose(adv, torch.tensor(adv_l, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ret, torch.tensor(ret_l, dtype=torch.float64), atol=1e-12)


def test_lambda_one_gives_monte_carlo_returns():
    # γ = λ = 1: A_t + V_t = sum of future rewards
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    v = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64)
    _, ret = gae_advantages(r, v, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([6.0, 5.0, 3.0])


def test_shape_check():
    with pytest.raises(ValueError, match="batch, tokens"):
        gae_advantages(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 1.0)


def test_whiten():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    std = math.sqrt(5 / 3 + 1e-8)  # unbiased variance of 1..4 is 5/3
    assert whiten(x).flatten().tolist() == pytest.approx([(v - 2.5) / std for v in (1, 2, 3, 4)])
    rescaled = whiten(x, shift_mean=False).flatten().tolist()
    assert rescaled == pytest.approx([(v - 2.5) / std + 2.5 for v in (1, 2, 3, 4)])
    xm = torch.tensor([[1.0, 100.0], [3.0, float("nan")]], dtype=torch.float64)
    mask = torch.tensor([[1, 0], [1, 0]])
    got = whiten(xm, mask)
    s = math.sqrt(2 + 1e-8)  # values 1, 3: mean 2, unbiased var 2
    assert got.flatten().tolist() == pytest.approx([-1 / s, 0.0, 1 / s, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        whiten(x, torch.tensor([[1, 0], [0, 0]]))


def test_whiten_statistics_over_ranks():
    """all_sum makes n, Σx and Σ(x - mean)² global: here a fake second rank holding the same 4 values doubles
    every sum, so n = 8, mean = 2.5, var = 2·5 / 7 (not 5 / 3 as for this rank alone)."""
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    calls = []

    def twin_rank_sum(v):
        calls.append(v)
        return 2 * v

    got = whiten(x, all_sum=twin_rank_sum, eps=0.0).flatten().tolist()
    assert got == pytest.approx([(v - 2.5) / math.sqrt(10 / 7) for v in (1, 2, 3, 4)])
    assert calls == [4, 10.0, 5.0]            # n, Σx, Σ(x - mean)² of this rank
    with pytest.raises(ValueError, match="at least 2"):     # the global count decides
        whiten(x, torch.tensor([[1, 0], [0, 0]]), all_sum=lambda v: v)
    assert whiten(x, torch.tensor([[1, 0], [0, 0]]), all_sum=twin_rank_sum)[0, 0] == 0.0   # both ranks hold 1
