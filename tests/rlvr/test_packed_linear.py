"""Pre-packed oneDNN linears in the HF engine's bf16 sampling copy: same outputs as plain linears, re-packed after
every weight update, never applied to a module the trainer shares."""
from __future__ import annotations

import pytest
import torch

from rlvr.rollout import SamplingParams, get_engine
from rlvr.models.packed_linear import PackedLinear, can_pack, is_packed, pack_linears


def _require_packing() -> None:
    if not can_pack(torch.nn.Linear(2, 2)):
        pytest.skip("this CPU/torch build has no oneDNN bf16 kernels to pack for")


@pytest.mark.parametrize("shape", [(7, 64), (3, 5, 64)])
def test_packed_linear_equals_linear(shape):
    _require_packing()
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    packed = PackedLinear(lin, rows_hint=32)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    assert torch.equal(packed(x), lin(x))
    with pytest.raises(RuntimeError, match="inference-only"):
        PackedLinear(torch.nn.Linear(64, 48), rows_hint=8)(x)     # a trainable weight under grad mode
    with torch.no_grad():
        lin.weight.mul_(-2.0)                      # the packed copy is stale until repack()
    assert not torch.equal(packed(x), lin(x))
    packed.repack()
    assert torch.equal(packed(x), lin(x))


def _rollouts(engine, seed=0):
    out = engine.generate(["12+34=", "7+8="], SamplingParams(n=3, max_new_tokens=8, seed=seed))
    return [(r.completion_ids, r.logprobs) for g in out for r in g]


def test_engine_copy_is_packed_and_samples_like_the_unpacked_copy():
    _require_packing()
    from rlvr.trainers.common import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny", device="cpu")   # packing is a CPU (oneDNN) feature
    packed = get_engine("hf", model=model, tokenizer=tok, dtype="bfloat16", pack_weights=True)
    plain = get_engine("hf", model=model, tokenizer=tok, dtype="bfloat16")       # the default: not packed
    n_packed = sum(isinstance(m, PackedLinear) for m in packed.model.modules())
    assert n_packed == sum(type(m) is torch.nn.Linear for m in model.modules()) > 0
    assert not is_packed(plain.model)
    assert packed.model.state_dict().keys() == model.state_dict().keys()
    assert _rollouts(packed) == _rollouts(plain)
    with torch.no_grad():                          # a trainer step: both engines get the new weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = _rollouts(packed, seed=1)
    packed.update_weights(model)
    plain.update_weights(model)
    after = _rollouts(packed, seed=1)
    assert after == _rollouts(plain, seed=1) and after != before


def test_a_module_shared_with_the_trainer_is_never_packed():
    from rlvr.trainers.common import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny", dtype="bfloat16", device="cpu")
    engine = get_engine("hf", model=model, tokenizer=tok, pack_weights=True)
    assert engine.model is model and not is_packed(model)


def test_pack_linears_counts_and_replaces_in_place():
    _require_packing()
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 4)))
    net = net.to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    ref = net(x)
    assert pack_linears(net) == 2 and isinstance(net[2][0], PackedLinear)
    assert torch.equal(net(x), ref)


def test_fp32_linear_packed_equals_it_under_bf16_autocast():
    """The reference model keeps fp32 weights and runs under autocast: packing must not change its outputs."""
    _require_packing()
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48).requires_grad_(False)
    packed = PackedLinear(lin, rows_hint=16)
    x = torch.randn(16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = lin(x)
        assert torch.equal(packed(x), expected) and expected.dtype == torch.bfloat16


def test_packed_reference_scores_like_the_plain_one_under_autocast():
    _require_packing()
    from rlvr.distributed import reference_model
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack

    model, tok = load_model_and_tokenizer("tiny", device="cpu")   # packing is a CPU (oneDNN) feature
    plain, packed = reference_model(model), reference_model(model, pack_bf16=True)
    assert is_packed(packed)
    assert not is_packed(model)        # the policy is untouched
    batch = pack([tok("12+34=")["input_ids"]] * 2, [tok("<answer>64</answer>")["input_ids"]] * 2, tok.pad_token_id)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):   # CPU autocast on a GPU box too
        a, b = completion_logprobs(plain, batch)[0], completion_logprobs(packed, batch)[0]
    assert torch.equal(a, b)
