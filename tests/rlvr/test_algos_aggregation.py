"""aggregate_loss: each mode on a hand-computed 2x3 example, and gradient accumulation with global normalisers."""
import pytest
import torch

from rlvr.algos import AGG_MODES, UnknownAlgorithmError, aggregate_loss

# row 0: 3 tokens (1, 2, 3); row 1: 1 token (4), then padding that holds garbage
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 100.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token_mean", (1 + 2 + 3 + 4) / 4),                # 2.5
        ("seq_mean_token_sum", ((1 + 2 + 3) + 4) / 2),      # 5.0
        ("seq_mean_token_mean", ((1 + 2 + 3) / 3 + 4) / 2),  # 3.0
    ],
)
def test_modes_hand_computed(mode, expected):
    assert aggregate_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


def test_dr_grpo_constant_normaliser():
    # sum / (B · max_tokens) = 10 / (2 · 8)
    assert aggregate_loss(LOSS, MASK, "dr_grpo", max_tokens=8).item() == pytest.approx(10 / 16)
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate_loss(LOSS, MASK, "dr_grpo")


def test_modes_and_errors():
    assert set(AGG_MODES) == {"token_mean", "seq_mean_token_sum", "seq_mean_token_mean", "dr_grpo"}
    with pytest.raises(UnknownAlgorithmError, match="token_mean"):
        aggregate_loss(LOSS, MASK, "tokenmean")
    with pytest.raises(ValueError, match="batch, tokens"):
        aggregate_loss(LOSS, MASK[:, :2], "token_mean")


def test_empty_mask_and_empty_rows():
    zero = torch.zeros(2, 3, dtype=torch.bool)
    for mode in AGG_MODES:
        assert aggregate_loss(LOSS, zero, mode, max_tokens=3).item() == 0.0
    # a fully masked row does not dilute the sequence means
    loss = torch.tensor([[2.0, 4.0], [7.0, 7.0]])
    mask = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    assert aggregate_loss(loss, mask, "seq_mean_token_mean").item() == pytest.approx(3.0)
    assert aggregate_loss(loss, mask, "seq_mean_token_sum").item() == pytest.approx(6.0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_grad_accumulation_with_global_normaliser_equals_full_batch(mode):
    g = torch.Generator().manual_seed(0)
    B, T = 6, 7
    base = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 1, 3, 5, 2, 6])
    mask = torch.arange(T)[None, :] < lengths[:, None]

    w_full = torch.ones((), dtype=torch.float64, requires_grad=True)
    full = aggregate_loss(base * w_full, mask, mode, max_tokens=T)
    full.backward()

    n_tokens, n_seqs = int(mask.sum()), B
    w_acc = torch.ones((), dtype=torch.float64, requires_grad=True)
    total = 0.0
    for sl in (slice(0, 2), slice(2, 3), slice(3, 6)):  # unequal micro-batches
        part = aggregate_loss(base[sl] * w_acc, mask[sl], mode, max_tokens=T,
                              num_tokens_total=n_tokens, num_seqs_total=n_seqs)
        part.backward()
        total += part.item()
    assert total == pytest.approx(full.item(), abs=1e-12)
    assert w_acc.grad.item() == pytest.approx(w_full.grad.item(), abs=1e-12)


def test_token_mean_micro_batch_means_differ_without_global_normaliser():
    # the subtlety itself: averaging per-micro-batch token means is not the full-batch token mean
    loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    naive = (aggregate_loss(loss[:1], mask[:1], "token_mean") + aggregate_loss(loss[1:], mask[1:], "token_mean")) / 2
    assert naive.item() == pytest.approx(2.5)
    assert aggregate_loss(loss, mask, "token_mean").item() == pytest.approx(7 / 4)
