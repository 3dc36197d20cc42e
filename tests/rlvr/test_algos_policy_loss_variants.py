"""GSPO (sequence-level ratio) and CISPO (clipped stop-gradient IS weight): values and gradients by hand."""
import math

import pytest
import torch

from rlvr.algos import cispo_policy_loss, clipped_policy_loss, get_policy_loss, gspo_policy_loss


def _inputs():
    # two sequences: 3 real tokens, then 2 real tokens + padding; token log-ratios chosen by hand
    old = torch.log(torch.tensor([[0.5, 0.25, 0.5], [0.2, 0.4, 0.9]]))
    log_ratio = torch.tensor([[0.3, -0.6, 0.9], [0.1, 0.3, 5.0]])
    logp = (old + log_ratio).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return logp, old, mask


def test_gspo_sequence_ratio_value_and_gradient():
    logp, old, mask = _inputs()
    adv = torch.tensor([1.0, -2.0])
    # sequence log-ratios: (0.3 - 0.6 + 0.9) / 3 = 0.2 and (0.1 + 0.3) / 2 = 0.2 (the padded 5.0 is ignored)
    s = math.exp(0.2)                                                        # 1.2214 for both
    loss, m = gspo_policy_loss(logp, old, adv, mask, clip_low=0.1, clip_high=0.3)
    # inside [0.9, 1.3]: L = -s·A on every real token, 0 on padding
    expect = torch.tensor([[-s, -s, -s], [2 * s, 2 * s, 0.0]])
    assert torch.allclose(loss, expect, atol=1e-6)
    loss.sum().backward()
    # d L_it / d logp_it = -A·s (the token form: each token's gradient carries the whole sequence ratio)
    assert torch.allclose(logp.grad, torch.tensor([[-s, -s, -s], [2 * s, 2 * s, 0.0]]), atol=1e-6)
    assert m["loss/ratio_mean"] == pytest.approx(s, rel=1e-6) and m["loss/clipfrac"] == 0


def test_gspo_clips_whole_sequences():
    logp, old, mask = _inputs()
    # ε_high = 0.2: s = 1.2214 > 1.2, so the A > 0 sequence is clipped (constant loss, no gradient); the A < 0
    # one is not (for A < 0 only a ratio below 1 - ε_low clips)
    loss, m = gspo_policy_loss(logp, old, torch.tensor([1.0, -1.0]), mask, clip_low=0.2, clip_high=0.2)
    loss.sum().backward()
    assert torch.allclose(loss[0], torch.full((3,), -1.2), atol=1e-6)
    assert torch.equal(logp.grad[0], torch.zeros(3)) and (logp.grad[1, :2] != 0).all()
    assert m["loss/clipfrac_high"] == pytest.approx(3 / 5)


def test_gspo_on_policy_equals_ppo_clip():
    """old = current: every ratio is 1, and the gradient is GRPO's (same aggregation)."""
    logp, _, mask = _inputs()
    old = logp.detach()
    adv = torch.tensor([0.7, -1.3])
    g = []
    for fn in (clipped_policy_loss, gspo_policy_loss):
        x = logp.detach().clone().requires_grad_(True)
        loss, _ = fn(x, old, adv, mask, 0.2, 0.28)
        loss.sum().backward()
        g.append(x.grad)
    assert torch.allclose(g[0], g[1], atol=1e-6)


def test_cispo_weights_and_gradient():
    logp, old, mask = _inputs()
    adv = torch.tensor([1.0, -1.0])
    loss, m = cispo_policy_loss(logp, old, adv, mask, clip_low=1.0, clip_high=1.0)     # w = clip(r, 0, 2)
    r = torch.exp(torch.tensor([[0.3, -0.6, 0.9], [0.1, 0.3, 5.0]]))
    w = r.clamp(max=2.0)                                                      # e^0.9 = 2.46 -> 2
    expect = torch.where(mask, -w * adv[:, None], torch.zeros(()))
    assert torch.allclose(loss, expect, atol=1e-6)
    loss.sum().backward()
    # gradient -w·A on every real token, clipped ones included (PPO would give the e^0.9 token, A > 0, zero)
    assert torch.allclose(logp.grad, expect, atol=1e-6) and logp.grad[0, 2] == pytest.approx(-2.0)
    assert m["loss/clipfrac_high"] == pytest.approx(1 / 5)
    assert m["loss/weight_mean"] == pytest.approx(float((w[mask]).mean()), rel=1e-6)
    ppo, _ = clipped_policy_loss(logp.detach().clone().requires_grad_(True), old, adv, mask, 0.2, 0.2)
    assert float(ppo[0, 2].detach()) == pytest.approx(-1.2)


def test_cispo_lower_bound_and_validation():
    logp, old, mask = _inputs()
    loss, m = cispo_policy_loss(logp, old, torch.tensor([1.0, 1.0]), mask, clip_low=0.2, clip_high=4.0)
    assert float(loss[0, 1].detach()) == pytest.approx(-0.8)                  # r = e^-0.6 = 0.549 -> floor 0.8
    assert m["loss/clipfrac_low"] == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="dual_clip"):
        cispo_policy_loss(logp, old, torch.zeros(2), mask, dual_clip_c=3.0)
    with pytest.raises(ValueError, match="clip_low"):
        clipped_policy_loss(logp, old, torch.zeros(2), mask, clip_low=1.0)


def test_registered():
    assert get_policy_loss("gspo") is gspo_policy_loss and get_policy_loss("cispo") is cispo_policy_loss
