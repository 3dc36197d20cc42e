"""high_entropy_mask: the top-ρ tokens by entropy among the real ones, by hand."""
import pytest
import torch

from rlvr.algos import high_entropy_mask


def test_top_half_by_hand():
    ent = torch.tensor([[0.1, 0.5, 0.9], [0.3, 5.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    # real entropies sorted: 0.1 0.3 0.5 0.9; the 0.5-quantile interpolates to 0.4; the padded 5.0 never counts
    keep = high_entropy_mask(ent, mask, 0.5)
    assert keep.tolist() == [[False, True, True], [False, False, False]]
    # ρ = 0.25: τ = quantile_0.75 = 0.5 + 0.25·(0.9 - 0.5) = 0.6 -> only 0.9
    assert high_entropy_mask(ent, mask, 0.25).tolist() == [[False, False, True], [False, False, False]]


def test_all_tokens_ties_and_validation():
    ent = torch.tensor([[0.2, 0.2, 0.2, 0.2]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(high_entropy_mask(ent, mask, 1.0), mask)
    assert torch.equal(high_entropy_mask(ent, mask, 0.2), mask)        # ties at τ are kept
    assert not high_entropy_mask(ent, torch.zeros_like(mask), 0.2).any()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_fraction"):
            high_entropy_mask(ent, mask, bad)
