"""Preference and reward-model losses on hand-made numbers (expected values computed here with math.*)."""
import math

import pytest
import torch

from rlvr.algos import (
    bradley_terry_loss,
    dpo_loss,
    implicit_rewards,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    log_odds,
    orpo_loss,
    pairs_from_ranking,
    reward_centering,
    simpo_loss,
)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def softplus(x):
    return math.log1p(math.exp(x))


# chosen -5, rejected -7, ref_chosen -6, ref_rejected -6.5 -> h = (1) - (-0.5) = 1.5
C, R, RC, RR = t(-5.0), t(-7.0), t(-6.0), t(-6.5)


def test_dpo_hand_computed():
    beta = 0.1
    assert dpo_loss(C, R, RC, RR, beta).item() == pytest.approx(math.log(1 + math.exp(-0.15)))
    eps = 0.1
    expected = -(1 - eps) * math.log(1 / (1 + math.exp(-0.15))) - eps * math.log(1 / (1 + math.exp(0.15)))
    assert dpo_loss(C, R, RC, RR, beta, label_smoothing=eps).item() == pytest.approx(expected)


def test_dpo_limits_and_stability():
    big = t(1e4)
    assert dpo_loss(big, t(0.0), t(0.0), t(0.0), beta=1.0).item() == pytest.approx(0.0, abs=1e-12)
    # h -> -inf: loss ~ -β h, finite (softplus, not log(sigmoid))
    assert dpo_loss(-big, t(0.0), t(0.0), t(0.0), beta=1.0).item() == pytest.approx(1e4)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(C, R, RC, RR, 0.1, label_smoothing=0.5)


def test_dpo_gradients():
    beta = 0.1
    c, r = C.clone().requires_grad_(True), R.clone().requires_grad_(True)
    dpo_loss(c, r, RC, RR, beta).sum().backward()
    # d/dπ_c [-log σ(βh)] = -β σ(-βh); d/dπ_r = +β σ(-βh)
    s = 1 / (1 + math.exp(0.15))
    assert c.grad.item() == pytest.approx(-beta * s) and r.grad.item() == pytest.approx(beta * s)


def test_implicit_rewards():
    pol = C.clone().requires_grad_(True)
    rw = implicit_rewards(pol, RC, beta=0.5)
    assert rw.item() == pytest.approx(0.5) and not rw.requires_grad


def test_ipo():
    # τ = 0.5 -> target 1/(2τ) = 1; h = 1.5 -> 0.25
    assert ipo_loss(C, R, RC, RR, tau=0.5).item() == pytest.approx(0.25)
    # fixed point: h = 1/(2τ) = 2.5 for τ = 0.2
    assert ipo_loss(t(-1.0), t(-3.5), t(-2.0), t(-2.0), tau=0.2).item() == pytest.approx(0.0, abs=1e-12)
    c = t(-1.0).requires_grad_(True)
    ipo_loss(c, t(-3.5), t(-2.0), t(-2.0), tau=0.2).sum().backward()
    assert c.grad.item() == pytest.approx(0.0, abs=1e-12)


def test_simpo():
    # β = 2, γ = 0.5: z = 2·(-0.5 + 0.9) - 0.5 = 0.3
    assert simpo_loss(t(-0.5), t(-0.9), beta=2.0, gamma=0.5).item() == pytest.approx(math.log(1 + math.exp(-0.3)))


def test_orpo():
    def lo(x):
        p = math.exp(x)
        return math.log(p / (1 - p))

    ac, ar, nll, lam = -0.4, -1.2, 0.4, 0.1
    expected = nll + lam * -math.log(1 / (1 + math.exp(-(lo(ac) - lo(ar)))))
    assert orpo_loss(t(ac), t(ar), t(nll), lam).item() == pytest.approx(expected)


def test_log_odds_stable():
    x = t(-1e-12, -1e-3, -0.5, -2.0, -60.0, 0.0)
    got = log_odds(x)
    assert torch.isfinite(got).all()
    for xi, gi in zip(x.tolist()[1:5], got.tolist()[1:5]):
        p = math.exp(xi)
        assert gi == pytest.approx(math.log(p) - math.log1p(-p), rel=1e-9)
    assert got[0].item() == pytest.approx(-math.log(1e-12), rel=1e-3)  # log(1/(1-p)) ≈ -log(-x)
    assert got[4].item() == pytest.approx(-60.0, rel=1e-9)  # p tiny: log odds ≈ log p


def test_kto():
    policy, ref = t(-3.0, -3.0), t(-4.0, -4.0)  # r = 1 for both
    desirable = torch.tensor([True, False])
    z0 = torch.tensor(0.4, dtype=torch.float64)
    beta, wd, wu = 0.5, 1.0, 1.5
    sig = lambda v: 1 / (1 + math.exp(-v))
    expected = [wd * (1 - sig(beta * (1 - 0.4))), wu * (1 - sig(beta * (0.4 - 1)))]
    got = kto_loss(policy, ref, desirable, z0, beta, desirable_weight=wd, undesirable_weight=wu)
    assert got.tolist() == pytest.approx(expected)
    # a negative KL estimate is clamped to 0
    got0 = kto_loss(policy, ref, desirable, torch.tensor(-2.0, dtype=torch.float64), beta)
    assert got0.tolist() == pytest.approx([1 - sig(0.5), 1 - sig(-0.5)])


def test_kto_reference_point():
    assert kto_reference_point(t(-1.0, -2.0), t(-2.0, -2.0)).item() == pytest.approx(0.5)
    z = kto_reference_point(t(-3.0).requires_grad_(True), t(-2.0))
    assert z.item() == 0.0 and not z.requires_grad


def test_bradley_terry():
    assert bradley_terry_loss(t(2.0), t(0.5), margin=0.5).item() == pytest.approx(math.log(1 + math.exp(-1.0)))
    a, b = t(0.3, -2.0, 5.0), t(1.1, 0.0, -5.0)
    # σ(a-b) + σ(b-a) = 1  ->  exp(-L(a,b)) + exp(-L(b,a)) = 1
    total = torch.exp(-bradley_terry_loss(a, b)) + torch.exp(-bradley_terry_loss(b, a))
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64))
    assert bradley_terry_loss(t(-1000.0), t(0.0)).item() == pytest.approx(1000.0)  # finite
    rc = t(1.0).requires_grad_(True)
    bradley_terry_loss(rc, t(0.0)).backward()
    assert rc.grad.item() == pytest.approx(-1 / (1 + math.exp(1.0)))  # -σ(-(1-0))


def test_pairs_from_ranking():
    assert pairs_from_ranking(4).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert pairs_from_ranking(7).shape == (21, 2)
    assert pairs_from_ranking(1).shape == (0, 2)
    with pytest.raises(ValueError):
        pairs_from_ranking(0)
    # K-wise BT: rewards already in ranking order give a smaller loss than the reversed order
    r = t(3.0, 2.0, 1.0)
    p = pairs_from_ranking(3)
    rev = r.flip(0)
    assert bradley_terry_loss(r[p[:, 0]], r[p[:, 1]]).sum() < bradley_terry_loss(rev[p[:, 0]], rev[p[:, 1]]).sum()


def test_reward_centering():
    assert reward_centering(t(1.5), t(-0.5), coef=0.01).item() == pytest.approx(0.01 * 1.0)
    assert reward_centering(t(2.0), t(-2.0), coef=0.01).item() == 0.0
