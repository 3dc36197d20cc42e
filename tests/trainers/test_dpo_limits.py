"""The DPO family at its limits (the hand-computed values are in tests/rlvr/test_algos_preference.py):
where each loss's optimum lies, what it tends to, and which way its gradient pushes."""
from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import dpo_loss, ipo_loss, kto_loss, orpo_loss, simpo_loss


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


Z = t(0.0)


def dpo_h(h, beta, eps=0.0):
    """DPO loss as a function of the margin h alone (reference log-probs 0, rejected 0)."""
    return dpo_loss(h, Z, Z, Z, beta, label_smoothing=eps)


def minimise(fn, h0=0.0, lr=0.5, steps=4000):
    h = torch.tensor([h0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([h], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        fn(h).sum().backward()
        opt.step()
    return h.item()


def test_dpo_at_zero_margin_and_small_beta_is_log2():
    assert dpo_h(t(0.0), beta=0.1).item() == pytest.approx(math.log(2))
    assert dpo_h(t(37.0), beta=1e-9).item() == pytest.approx(math.log(2), rel=1e-6)


def test_dpo_has_no_finite_optimum_but_cdpo_does():
    # plain DPO: the gradient w.r.t. h is -β σ(-βh) < 0 everywhere, so h is pushed up without bound
    for h in (-5.0, 0.0, 5.0, 50.0):
        x = t(h).requires_grad_(True)
        dpo_h(x, beta=0.5).sum().backward()
        assert x.grad.item() < 0
    # cDPO: (1-ε)·softplus(-βh) + ε·softplus(βh) is minimised where σ(βh) = 1 - ε, i.e. βh* = log((1-ε)/ε)
    beta, eps = 0.5, 0.1
    h_star = math.log((1 - eps) / eps) / beta
    x = t(h_star).requires_grad_(True)
    dpo_h(x, beta, eps).sum().backward()
    assert x.grad.item() == pytest.approx(0.0, abs=1e-12)
    assert minimise(lambda h: dpo_h(h, beta, eps)) == pytest.approx(h_star, rel=1e-6)
    # and the loss there is the binary entropy of ε
    assert dpo_h(t(h_star), beta, eps).item() == pytest.approx(-(eps * math.log(eps) + (1 - eps) * math.log(1 - eps)))


@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_ipo_converges_to_its_fixed_point_from_either_side(tau):
    target = 1 / (2 * tau)
    ipo_h = lambda h: ipo_loss(h, Z, Z, Z, tau)
    for h0 in (target - 3.0, target + 3.0):
        assert minimise(ipo_h, h0=h0, lr=0.1, steps=500) == pytest.approx(target, abs=1e-9)
    # the loss is symmetric around the target: over- and under-shooting cost the same
    assert ipo_h(t(target + 0.7)).item() == pytest.approx(ipo_h(t(target - 0.7)).item())


def test_simpo_limits():
    beta, gamma = 2.0, 0.5
    # margin exactly γ/β: the sigmoid argument is 0 -> log 2
    assert simpo_loss(t(-1.0 + gamma / beta), t(-1.0), beta, gamma).item() == pytest.approx(math.log(2))
    # a huge averaged-log-prob gap -> 0; the reverse -> grows linearly (finite)
    assert simpo_loss(t(-0.01), t(-50.0), beta, gamma).item() == pytest.approx(0.0, abs=1e-30)
    assert simpo_loss(t(-50.0), t(-0.01), beta, gamma).item() == pytest.approx(beta * 49.99 + gamma)
    # γ = 0 and equal averages: log 2, whatever the lengths were
    assert simpo_loss(t(-3.0), t(-3.0), beta, 0.0).item() == pytest.approx(math.log(2))


def test_orpo_limits():
    nll = t(0.7)
    # λ = 0: plain SFT
    assert orpo_loss(t(-0.7), t(-0.2), nll, lam=0.0).item() == pytest.approx(0.7)
    # chosen certain (avg log p -> 0) and rejected impossible: odds-ratio term -> 0, only the NLL is left
    assert orpo_loss(t(-1e-9), t(-40.0), nll, lam=1.0).item() == pytest.approx(0.7, abs=1e-8)
    # equal probabilities: the odds-ratio term is log 2
    assert orpo_loss(t(-0.5), t(-0.5), nll, lam=1.0).item() == pytest.approx(0.7 + math.log(2))


def test_kto_limits():
    d, u, z0 = torch.tensor([True]), torch.tensor([False]), t(0.3)
    kto = lambda r, lab: kto_loss(r, Z, lab, z0, beta=1.0, desirable_weight=2.0, undesirable_weight=3.0).item()
    assert kto(t(1e3), d) == pytest.approx(0.0, abs=1e-12) and kto(t(-1e3), d) == pytest.approx(2.0)
    assert kto(t(-1e3), u) == pytest.approx(0.0, abs=1e-12) and kto(t(1e3), u) == pytest.approx(3.0)
    # at the reference point each side pays half its weight
    assert kto(t(0.3), d) == pytest.approx(1.0) and kto(t(0.3), u) == pytest.approx(1.5)
