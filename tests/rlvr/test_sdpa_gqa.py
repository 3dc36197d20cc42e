"""`sdpa_gqa`: the same logits and samples as HF's `sdpa`, without copying grouped key/value heads."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers.integrations.sdpa_attention as hf_sdpa
from transformers import LlamaConfig, LlamaForCausalLM

from rlvr.models.attention import SDPA_GQA, use_sdpa_gqa
from rlvr.rollout.decode import decode


def _gqa_model(kv_heads: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation("sdpa")
    return model


def _left_padded():
    ids = torch.randint(3, 64, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :2] = 0
    mask[2, :4] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.fixture
def no_repeat_kv(monkeypatch):
    calls = []
    real = hf_sdpa.repeat_kv
    monkeypatch.setattr(hf_sdpa, "repeat_kv", lambda *a: calls.append(1) or real(*a))
    return calls


def test_same_logits_and_samples_as_sdpa_without_repeat_kv(no_repeat_kv):
    plain = _gqa_model()
    gqa = copy.deepcopy(plain)
    assert use_sdpa_gqa(gqa) and gqa.config._attn_implementation == SDPA_GQA
    ids, mask = _left_padded()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = plain(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        assert no_repeat_kv                                  # HF's sdpa copies the heads under a mask
        no_repeat_kv.clear()
        out = gqa(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert not no_repeat_kv
    real = mask.bool()
    assert (ref - out)[real].abs().max() < 1e-5
    kw = dict(max_new_tokens=6, temperature=1.0, repeats=3, pad_id=0)
    torch.manual_seed(1)
    toks_ref, lp_ref = decode(plain, ids, mask, **kw)
    torch.manual_seed(1)
    toks, lp = decode(gqa, ids, mask, **kw)
    assert torch.equal(toks, toks_ref) and (lp - lp_ref).abs().max() < 1e-5


def test_square_prefill_without_mask_stays_causal():
    plain = _gqa_model()
    gqa = copy.deepcopy(plain)
    use_sdpa_gqa(gqa)
    ids = torch.randint(3, 64, (2, 6))
    with torch.no_grad():                                   # no padding: HF drops the mask, is_causal must hold
        a, b = plain(input_ids=ids).logits, gqa(input_ids=ids).logits
        changed = ids.clone()
        changed[:, -1] = (ids[:, -1] + 1) % 64
        c = gqa(input_ids=changed).logits
    assert (a - b).abs().max() < 1e-5
    assert torch.equal(c[:, :-1], b[:, :-1])               # a later token never reaches earlier positions


def test_left_alone_without_grouped_heads_and_used_by_the_hf_engine_copy():
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import load_model_and_tokenizer

    mha = _gqa_model(kv_heads=4)
    assert not use_sdpa_gqa(mha) and mha.config._attn_implementation == "sdpa"
    tiny, tok = load_model_and_tokenizer("tiny")             # 4 heads, 4 KV heads
    engine = get_engine("hf", model=tiny, tokenizer=tok, dtype="bfloat16")
    assert engine.model.config._attn_implementation == tiny.config._attn_implementation
    gqa = _gqa_model()
    engine = get_engine("hf", model=gqa, tokenizer=tok, dtype="bfloat16")
    assert engine.model.config._attn_implementation == SDPA_GQA
    assert gqa.config._attn_implementation == "sdpa"          # the trainer's own module is not touched


@pytest.mark.parametrize("kv_heads", [2, 6])
@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_one_query_attention_equals_sdpa(kv_heads, mask_kind):
    """The decode-step path: grouped heads read their KV head, masks of either kind, fp32 and bf16."""
    from rlvr.models.attention import one_query_attention

    torch.manual_seed(0)
    B, H, K, D = 5, 6, 9, 16
    q, k, v = torch.randn(B, H, 1, D), torch.randn(B, kv_heads, K, D), torch.randn(B, kv_heads, K, D)
    keep = torch.ones(B, 1, 1, K, dtype=torch.bool)
    keep[0, ..., :4] = False
    keep[3, ..., :1] = False
    mask = {"bool": keep, "additive": torch.zeros(B, 1, 1, K).masked_fill(~keep, float("-inf")), "none": None}
    m = mask[mask_kind]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=kv_heads != H)
    out = one_query_attention(q, k, v, m, scaling=None)
    assert out.shape == (B, 1, H, D)
    assert (out - ref.transpose(1, 2)).abs().max() < 1e-5
    out16 = one_query_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), m, scaling=0.5)
    ref16 = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.5,
                                                             enable_gqa=kv_heads != H)
    assert out16.dtype == torch.bfloat16 and (out16.float() - ref16.transpose(1, 2)).abs().max() < 0.03
