"""logprobs_from_logits and entropy_from_logits vs torch.distributions.Categorical."""
import torch
from torch.distributions import Categorical

from rlvr.algos import entropy_from_logits, logprobs_from_logits


def _logits(scale=1.0):
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 5, 11, generator=g, dtype=torch.float64) * scale


def test_logprobs_match_categorical():
    logits = _logits()
    tokens = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    got = logprobs_from_logits(logits, tokens)
    assert got.shape == (3, 5)
    assert torch.allclose(got, Categorical(logits=logits).log_prob(tokens), atol=1e-12)


def test_entropy_matches_categorical():
    logits = _logits()
    got = entropy_from_logits(logits)
    assert got.shape == (3, 5)
    assert torch.allclose(got, Categorical(logits=logits).entropy(), atol=1e-12)


def test_stable_for_huge_logits_and_masked_vocab():
    logits = _logits(scale=1e4).float()  # naive softmax/log would overflow
    tokens = torch.zeros(3, 5, dtype=torch.long)
    assert torch.isfinite(logprobs_from_logits(logits, tokens)).all()
    ent = entropy_from_logits(logits)
    assert torch.isfinite(ent).all() and (ent >= -1e-4).all()
    masked = _logits().clone()
    masked[..., 5:] = float("-inf")  # e.g. top-k filtered logits
    assert torch.allclose(entropy_from_logits(masked), entropy_from_logits(masked[..., :5]), atol=1e-12)


def test_gradients_match_categorical():
    logits = _logits().requires_grad_(True)
    tokens = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(2))
    (logprobs_from_logits(logits, tokens).sum() + entropy_from_logits(logits).sum()).backward()
    ours = logits.grad.clone()
    logits.grad = None
    dist = Categorical(logits=logits)
    (dist.log_prob(tokens).sum() + dist.entropy().sum()).backward()
    assert torch.allclose(ours, logits.grad, atol=1e-10)
