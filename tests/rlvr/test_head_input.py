"""The LM head gets a contiguous input: same logits, and no per-row expanded-weight product on CPU."""
from __future__ import annotations

import copy

import torch
from torch.profiler import ProfilerActivity, profile

from rlvr.models.head_input import contiguous_head_input


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_hook_keeps_outputs_and_avoids_the_batched_product():
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 500, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(4, 9, 32, dtype=torch.bfloat16)
    view = hidden[:, -3:, :]                            # what logits_to_keep=3 hands the head
    assert not view.is_contiguous()
    plain = head(view)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm_head = head

        def get_output_embeddings(self):
            return self.lm_head

    lm = contiguous_head_input(LM())
    contiguous_head_input(lm)                           # idempotent: one hook
    assert len(head._forward_pre_hooks) == 1
    with torch.no_grad():
        assert torch.equal(head(view), plain)
        assert "aten::bmm" not in _ops(lambda: head(view))
    assert len(copy.deepcopy(lm).lm_head._forward_pre_hooks) == 1    # reference / sampling copies keep it


def test_loader_and_engine_copy_carry_the_hook():
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny", device="cpu")
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 1
    engine = get_engine("hf", model=model, tokenizer=tok, dtype="bfloat16")
    assert engine.model is not model and len(engine.model.get_output_embeddings()._forward_pre_hooks) == 1


def test_model_without_a_head_is_left_alone():
    net = torch.nn.Linear(3, 3)
    assert contiguous_head_input(net) is net and not net._forward_pre_hooks
