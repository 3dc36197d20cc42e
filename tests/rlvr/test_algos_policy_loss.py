"""Clipped policy loss (clip-higher boundaries, gradients, dual clip), its metrics, and TIS weights."""
import math

import pytest
import torch

from rlvr.algos import clipped_policy_loss, get_policy_loss, list_policy_losses, tis_weights

EPS_LOW, EPS_HIGH = 0.2, 0.28


def _loss_and_grad(ratio: float, adv: float, dual_clip_c=None):
    """One token with the given ratio (float64); returns (loss, d loss / d logp)."""
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, metrics = clipped_policy_loss(logp, old, torch.tensor([adv], dtype=torch.float64),
                                        torch.ones(1, 1, dtype=torch.bool), EPS_LOW, EPS_HIGH, dual_clip_c)
    loss.sum().backward()
    return loss.item(), logp.grad.item(), metrics


D = 1e-4  # "just inside / just outside" a clip boundary


@pytest.mark.parametrize(
    "ratio, adv, clipped",
    [
        (1 + EPS_HIGH - D, 1.0, False),   # A > 0: inside the upper bound -> gradient flows
        (1 + EPS_HIGH + D, 1.0, True),    # A > 0: above 1+ε_high -> clipped, no gradient
        (1 - EPS_LOW - D, 1.0, False),    # A > 0: below 1-ε_low is NOT clipped (min picks the unclipped term)
        (1 - EPS_LOW + D, -1.0, False),   # A < 0: inside the lower bound
        (1 - EPS_LOW - D, -1.0, True),    # A < 0: below 1-ε_low -> clipped, no gradient
        (1 + EPS_HIGH + D, -1.0, False),  # A < 0: above 1+ε_high is NOT clipped (pessimistic bound)
    ],
)
def test_clip_higher_boundaries(ratio, adv, clipped):
    loss, grad, metrics = _loss_and_grad(ratio, adv)
    if clipped:
        bound = 1 + EPS_HIGH if adv > 0 else 1 - EPS_LOW
        assert loss == pytest.approx(-bound * adv, abs=1e-12)
        assert grad == 0.0
        key = "loss/clipfrac_high" if adv > 0 else "loss/clipfrac_low"
        assert float(metrics[key]) == 1.0 and float(metrics["loss/clipfrac"]) == 1.0
    else:
        assert loss == pytest.approx(-ratio * adv, abs=1e-12)
        # d(-A·exp(logp))/dlogp = -A·ratio
        assert grad == pytest.approx(-adv * ratio, abs=1e-12)
        assert float(metrics["loss/clipfrac"]) == 0.0


def test_dual_clip_caps_negative_advantage_loss():
    c = 3.0
    # A < 0, ratio 5 > c: unclipped loss = 5·2 = 10, dual clip caps at c·|A| = 6 with zero gradient
    loss, grad, metrics = _loss_and_grad(5.0, -2.0, dual_clip_c=c)
    assert loss == pytest.approx(6.0) and grad == 0.0
    assert float(metrics["loss/dual_clipfrac"]) == 1.0
    # A < 0, ratio 2 < c: ordinary PPO behaviour (unclipped branch, gradient -A·ratio = 4)
    loss, grad, metrics = _loss_and_grad(2.0, -2.0, dual_clip_c=c)
    assert loss == pytest.approx(4.0) and grad == pytest.approx(4.0)
    assert float(metrics["loss/dual_clipfrac"]) == 0.0
    # A > 0: dual clip does not apply (loss = -(1+ε_high)·A)
    loss, grad, _ = _loss_and_grad(5.0, 2.0, dual_clip_c=c)
    assert loss == pytest.approx(-(1 + EPS_HIGH) * 2.0) and grad == 0.0


def test_metrics_mask_and_broadcast():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0], [1.0, 1.1, 9.0]], dtype=torch.float64))
    old = torch.zeros_like(logp)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)  # [B] broadcast over tokens
    loss, m = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.2)
    assert loss[1, 2] == 0.0  # masked position (ratio 9 would otherwise count)
    # row 0 (A>0): ratios 1.5 (clipped high), 0.5, 1.0; row 1 (A<0): 1.0, 1.1 -> 1 clipped token of 5
    assert float(m["loss/clipfrac_high"]) == pytest.approx(1 / 5)
    assert float(m["loss/clipfrac_low"]) == 0.0
    assert float(m["loss/ratio_max"]) == pytest.approx(1.5)
    assert float(m["loss/ratio_mean"]) == pytest.approx((1.5 + 0.5 + 1.0 + 1.0 + 1.1) / 5)
    kl = [r - 1 - math.log(r) for r in (1.5, 0.5, 1.0, 1.0, 1.1)]
    assert float(m["loss/approx_kl"]) == pytest.approx(sum(kl) / 5)
    # [B, T] advantages give the same result as the broadcast [B] ones
    loss2, _ = clipped_policy_loss(logp, old, adv[:, None].expand(2, 3), mask, 0.2, 0.2)
    assert torch.equal(loss, loss2)


def test_registered_and_validates():
    assert "ppo_clip" in list_policy_losses() and get_policy_loss("ppo_clip") is clipped_policy_loss
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="dual_clip_c"):
        clipped_policy_loss(x, x, torch.zeros(1), x.bool(), dual_clip_c=1.0)
    with pytest.raises(ValueError, match="advantages"):
        clipped_policy_loss(x, x, torch.zeros(3), x.bool())


def test_tis_weights():
    trainer = torch.log(torch.tensor([[1.0, 2.0, 5.0], [0.5, 3.0, 1.0]]))
    sampler = torch.zeros(2, 3)
    trainer.requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w, m = tis_weights(trainer, sampler, cap=2.5, mask=mask)
    assert not w.requires_grad
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, 2.5], [0.5, 2.5, 1.0]]))
    assert float(m["tis/capped_frac"]) == pytest.approx(2 / 5)  # 5.0 and 3.0 are capped
    assert float(m["tis/weight_mean"]) == pytest.approx((1 + 2 + 2.5 + 0.5 + 2.5) / 5)
    assert float(m["tis/raw_ratio_max"]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="cap"):
        tis_weights(trainer, sampler, cap=0)
