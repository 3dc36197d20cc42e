"""KL estimators vs analytic KL by sampling, KL reward shaping, and the KL coefficient controllers."""
import math

import pytest
import torch

from rlvr.algos import (
    AdaptiveKLController,
    FixedKLController,
    get_kl,
    kl_penalty_rewards,
    list_kl,
)

PI = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
REF = torch.tensor([0.2, 0.3, 0.1, 0.3, 0.1], dtype=torch.float64)


def _samples(n=200_000):
    g = torch.Generator().manual_seed(1234)
    x = torch.multinomial(PI, n, replacement=True, generator=g)
    # shape [B, T] = [n/100, 100]: estimators are elementwise
    return PI.log()[x].view(-1, 100), REF.log()[x].view(-1, 100)


def test_estimators_registered():
    assert {"k1", "k2", "k3"} <= set(list_kl())


@pytest.mark.parametrize("name", ["k1", "k3"])
def test_unbiased_estimators_match_analytic_kl(name):
    kl_true = float((PI * (PI.log() - REF.log())).sum())
    logp, ref_logp = _samples()
    est = get_kl(name)(logp, ref_logp)
    assert est.shape == logp.shape
    stderr = float(est.std()) / math.sqrt(est.numel())
    assert abs(float(est.mean()) - kl_true) < 4 * stderr


def test_k2_expectation_and_variance_ordering():
    # E_π[k2] = ½ Σ π (log π - log ref)²: not KL, but we can still check it analytically
    expected = float((PI * 0.5 * (PI.log() - REF.log()) ** 2).sum())
    logp, ref_logp = _samples()
    k2 = get_kl("k2")(logp, ref_logp)
    stderr = float(k2.std()) / math.sqrt(k2.numel())
    assert abs(float(k2.mean()) - expected) < 4 * stderr
    assert float(k2.min()) >= 0
    # the point of k3: lower variance than k1 here
    assert float(get_kl("k3")(logp, ref_logp).var()) < float(get_kl("k1")(logp, ref_logp).var())


def test_k3_nonnegative_and_hand_values():
    g = torch.Generator().manual_seed(0)
    logp, ref_logp = torch.randn(50, 20, generator=g) * 3, torch.randn(50, 20, generator=g) * 3
    assert float(get_kl("k3")(logp, ref_logp).min()) >= 0
    lp, rl = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[-2.5]], dtype=torch.float64)
    assert get_kl("k1")(lp, rl).item() == pytest.approx(1.5)
    assert get_kl("k2")(lp, rl).item() == pytest.approx(0.5 * 1.5**2)
    assert get_kl("k3")(lp, rl).item() == pytest.approx(math.exp(-1.5) + 1.5 - 1)


def test_kl_penalty_rewards_left_and_right_padding():
    logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -2.0, -9.0], [-2.0, -2.5, -3.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])  # right pad; both pads; empty row
    scores = torch.tensor([1.0, 2.0, 3.0])
    rewards, m = kl_penalty_rewards(scores, logp, ref, mask, coef=0.1, estimator="k1")
    expected = torch.tensor([
        [-0.05, 0.0, -0.1 + 1.0, 0.0],
        [0.0, -0.05, -0.1 + 2.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ])
    assert torch.allclose(rewards, expected)
    # per-sequence summed KL: 1.5, 1.5, 0 -> mean 1.0; token mean over 5 tokens: 3/5
    assert float(m["kl/seq_sum_mean"]) == pytest.approx(1.0)
    assert float(m["kl/token_mean"]) == pytest.approx(0.6)


def test_fixed_controller():
    c = FixedKLController(0.05)
    c.update(current_kl=10.0, n_steps=100)
    assert c.value == 0.05


def test_adaptive_controller():
    c = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    c.update(current_kl=9.0, n_steps=256)  # error 0.5 clipped to 0.2
    assert c.value == pytest.approx(0.2 * (1 + 0.2 * 256 / 10_000))
    before = c.value
    c.update(current_kl=5.4, n_steps=256)  # error -0.1, inside the clip
    assert c.value == pytest.approx(before * (1 - 0.1 * 256 / 10_000))
    before = c.value
    c.update(current_kl=0.0, n_steps=100)  # error -1 clipped to -0.2
    assert c.value == pytest.approx(before * (1 - 0.2 * 100 / 10_000))
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0, horizon=10)
