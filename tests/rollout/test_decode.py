"""rlvr.rollout.decode: inverse-CDF sampling and top-k/top-p filtering (vs HF's warpers), and the HF engine's
own-dtype sampling copy. The decode loop's contract (log-probs, greedy, seeds, stops, min_new_tokens) is covered
through the engine in tests/rlvr/test_rollout_hf.py."""
from __future__ import annotations

import pytest
import torch

from rlvr.rollout import SamplingParams, get_engine
from rlvr.rollout.decode import sample_inverse_cdf, top_k_top_p_filter


def test_inverse_cdf_hand_computed():
    # p = [0.1, 0, 0.6, 0.3] -> cdf [0.1, 0.1, 0.7, 1.0]: u < 0.1 -> 0, 0.1 <= u < 0.7 -> 2, u >= 0.7 -> 3;
    # the zero-probability token 1 is never drawn, and unnormalised rows (x2) give the same tokens.
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]] * 6)
    u = torch.tensor([0.0, 0.05, 0.11, 0.69, 0.71, 0.999])
    assert sample_inverse_cdf(probs, u).tolist() == [0, 0, 2, 2, 3, 3]
    assert sample_inverse_cdf(probs * 2, u).tolist() == [0, 0, 2, 2, 3, 3]


def test_inverse_cdf_frequencies_match_probs():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1, 7, generator=g), -1)
    draws = sample_inverse_cdf(probs.expand(200_000, 7), torch.rand(200_000, generator=g))
    freq = torch.bincount(draws, minlength=7).float() / draws.numel()
    assert torch.allclose(freq, probs[0], atol=5e-3)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.8), (3, 0.5), (1, 1.0), (0, 0.01)])
def test_filter_matches_hf_warpers(top_k, top_p):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    z = torch.randn(4, 50, generator=torch.Generator().manual_seed(top_k + int(top_p * 100)))
    expected = z.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = top_k_top_p_filter(z.clone(), top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], z[~torch.isinf(got)])
    assert (~torch.isinf(got)).sum(-1).min() >= 1


def test_engine_samples_with_its_own_bf16_copy():
    from rlvr.trainers.common import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny")
    engine = get_engine("hf", model=model, tokenizer=tok, dtype="bfloat16")
    assert engine.model is not model and next(engine.model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32                  # the trainer's module is untouched
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    engine.update_weights(model)                                            # copies (and casts) the new weights
    for (name, a), b in zip(model.state_dict().items(), engine.model.state_dict().values()):
        assert torch.equal(a.bfloat16(), b), name
    out = engine.generate(["12+34="], SamplingParams(n=3, max_new_tokens=6, seed=0))
    assert [len(r.logprobs) == r.num_tokens for r in out[0]] == [True] * 3
