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


def _full_path(logits, tokens, temperature):
    """The reference: a full float32 log_softmax over [N, V] and the textbook entropy."""
    logq = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logq.gather(1, tokens[:, None]).squeeze(1), -(logq.exp() * logq).sum(-1)


def test_token_logprobs_chunked_equals_full_log_softmax():
    """Values and gradients (log-prob and entropy terms) match the full path to 1e-5 in float32, whatever the chunk
    size (one row per chunk, uneven chunks, one chunk) and temperature."""
    from rlvr.algos import token_logprobs

    g = torch.Generator().manual_seed(3)
    n, v = 13, 257
    base = torch.randn(n, v, generator=g) * 3
    tokens = torch.randint(0, v, (n,), generator=g)
    w_lp, w_ent = torch.randn(n, generator=g), torch.randn(n, generator=g)
    for temperature in (1.0, 0.7):
        ref_in = base.clone().requires_grad_(True)
        ref_lp, ref_ent = _full_path(ref_in, tokens, temperature)
        ((ref_lp * w_lp).sum() + (ref_ent * w_ent).sum()).backward()
        for chunk_elems in (1, 5 * v, 10 ** 9):
            x = base.clone().requires_grad_(True)
            lp, ent = token_logprobs(x, tokens, temperature=temperature, with_entropy=True, chunk_elems=chunk_elems)
            assert lp.dtype == torch.float32 and lp.shape == ent.shape == (n,)
            assert torch.allclose(lp, ref_lp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
            ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
            assert torch.allclose(x.grad, ref_in.grad, atol=1e-5)


def test_token_logprobs_unused_entropy_and_bf16_input():
    """Entropy off (or unused in the loss) gives the plain log-prob gradient; bf16 logits give a bf16 gradient and
    float32 log-probs equal to the full path on the same (bf16-rounded) logits."""
    from rlvr.algos import token_logprobs

    g = torch.Generator().manual_seed(4)
    base = (torch.randn(6, 50, generator=g) * 2).bfloat16()
    tokens = torch.randint(0, 50, (6,), generator=g)
    ref_in = base.float().requires_grad_(True)
    ref_lp, _ = _full_path(ref_in, tokens, 1.0)
    ref_lp.sum().backward()
    for with_entropy in (False, True):
        x = base.clone().requires_grad_(True)
        lp, ent = token_logprobs(x, tokens, with_entropy=with_entropy, chunk_elems=100)
        assert (ent is not None) == with_entropy
        assert torch.allclose(lp, ref_lp, atol=1e-5)
        lp.sum().backward()
        assert x.grad.dtype == torch.bfloat16
        assert torch.allclose(x.grad.float(), ref_in.grad, atol=1e-2)


def test_token_logprobs_masked_vocabulary():
    """-inf logits (a masked vocabulary) contribute nothing: same values and gradients as the unmasked columns
    alone, zero gradient on the masked ones, nothing NaN."""
    from rlvr.algos import token_logprobs

    g = torch.Generator().manual_seed(5)
    base = torch.randn(4, 9, generator=g)
    tokens = torch.tensor([0, 3, 5, 1])
    keep = torch.tensor([True, True, False, True, False, True, True, False, True])
    full = base.masked_fill(~keep, float("-inf")).requires_grad_(True)
    lp, ent = token_logprobs(full, tokens, with_entropy=True, chunk_elems=9)
    (lp.sum() + ent.sum()).backward()
    sub = base[:, keep].clone().requires_grad_(True)
    ref_lp, ref_ent = _full_path(sub, torch.tensor([0, 2, 3, 1]), 1.0)     # token ids among the kept columns
    (ref_lp.sum() + ref_ent.sum()).backward()
    assert torch.allclose(lp, ref_lp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
    assert torch.allclose(full.grad[:, keep], sub.grad, atol=1e-5) and (full.grad[:, ~keep] == 0).all()
