"""Shared-prompt forward: the same log-probs, entropies and gradients as the plain pass, on fewer positions."""
from __future__ import annotations

import pytest
import torch

from rlvr.models.shared_prompt import distinct_prompts, shared_prompt_logits
from rlvr.trainers.common import PackedBatch, completion_logprobs, load_model_and_tokenizer, pack


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model_and_tokenizer("tiny")
    return model.float(), tok


def _grouped_batch(tok, group: int = 3) -> PackedBatch:
    """Three prompts of different lengths (left padding differs), `group` completions each of different
    lengths (right padding), rows grouped."""
    prompts = ["12+34=", "5+6=", "123+4=?"]
    comps = ["64", "11", "7", "9", "721", "1", "0", "44", "5"]
    p_ids = [tok(p)["input_ids"] for p in prompts for _ in range(group)]
    c_ids = [tok(comps[i % len(comps)])["input_ids"] + [tok.eos_token_id] for i in range(len(p_ids))]
    return pack(p_ids, c_ids, tok.pad_token_id)


def _positions_counter(model):
    """Token positions through the embedding, summed over forward calls."""
    seen = [0]
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.__setitem__(0, seen[0] +
                                                                                                 i[0].numel()))
    return seen, hook


def test_distinct_prompts_ignore_pad_ids_and_keep_first_rows():
    ids = torch.tensor([[0, 5, 6], [9, 5, 6], [7, 8, 9], [0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    first, inverse = distinct_prompts(ids, mask)
    assert len(first) == 2
    assert inverse.tolist()[:2] == [inverse[0]] * 2 and inverse[2] == inverse[4] != inverse[0]
    assert sorted(first.tolist()) == [0, 2]
    rep = first[inverse]                            # each row's representative: the first row with its prompt
    assert (rep <= torch.arange(5)).all()
    assert torch.equal(ids[rep] * mask[rep], ids * mask) and torch.equal(mask[rep], mask)


def test_log_probs_entropy_and_gradients_equal_the_plain_pass(tiny):
    model, tok = tiny
    batch = _grouped_batch(tok)
    model.train()
    results = {}
    for share in (False, True):
        model.zero_grad()
        seen, hook = _positions_counter(model)
        logp, ent = completion_logprobs(model, batch, with_entropy=True, share_prompts=share)
        hook.remove()
        (logp.sum() + 0.1 * ent.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[share] = (logp.detach(), ent.detach(), grads, seen[0])
    (lp0, e0, g0, n0), (lp1, e1, g1, n1) = results[False], results[True]
    B, P = batch.prompt_ids.shape
    C = batch.completion_ids.shape[1]
    assert n0 == B * (P + C)
    assert n1 == 3 * P + B * (C - 1)              # each prompt once; the last completion token is no input
    assert (lp0 - lp1).abs().max() < 1e-5 and (e0 - e1).abs().max() < 1e-5
    assert (lp1[~batch.completion_mask] == 0).all()
    assert ((g0 - g1).norm() / g0.norm()) < 1e-5


def test_attended_but_untrained_completion_tokens(tiny):
    """Multi-turn layout: env tokens are attended (completion_attention) but carry no loss."""
    model, tok = tiny
    b = _grouped_batch(tok, group=2)
    train = b.completion_mask.clone()
    train[:, 0] = False                            # the first completion token is "env feedback"
    batch = PackedBatch(b.prompt_ids, b.prompt_mask, b.completion_ids, train, b.completion_mask)
    with torch.no_grad():
        plain, _ = completion_logprobs(model.eval(), batch)
        shared, _ = completion_logprobs(model.eval(), batch, share_prompts=True)
    assert (plain - shared).abs().max() < 1e-5
    assert (shared[:, 0] == 0).all()


def test_not_applied_when_nothing_is_shared_or_checkpointing(tiny):
    model, tok = tiny
    distinct = pack([tok("1+2=")["input_ids"], tok("3+4=")["input_ids"]], [tok("3")["input_ids"]] * 2,
                    tok.pad_token_id)
    seen_mask = distinct.completion_mask
    assert shared_prompt_logits(model, distinct.prompt_ids, distinct.prompt_mask, distinct.completion_ids,
                                seen_mask) is None
    batch = _grouped_batch(tok)
    model.gradient_checkpointing_enable()
    try:
        model.train()
        assert shared_prompt_logits(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                    batch.completion_mask) is None
        with torch.no_grad():
            model.eval()
            assert shared_prompt_logits(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                        batch.completion_mask) is not None
    finally:
        model.gradient_checkpointing_disable()


def test_single_token_completions(tiny):
    model, tok = tiny
    batch = pack([tok("7+1=")["input_ids"]] * 3, [tok("8")["input_ids"][:1]] * 3, tok.pad_token_id)
    assert batch.completion_ids.shape[1] == 1
    with torch.no_grad():
        plain, _ = completion_logprobs(model.eval(), batch)
        shared, _ = completion_logprobs(model.eval(), batch, share_prompts=True)
    assert (plain - shared).abs().max() < 1e-5


def test_grpo_update_is_the_same_with_and_without_sharing():
    """policy_update (reference KL, two passes, two micro-batches, fp32): the same metrics and weights whether
    the prompts are shared or not."""
    import copy

    from rlvr.distributed import reference_model
    from rlvr.distributed.trainable import PlainTrainable
    from rlvr.trainers.grpo import Batch, GRPOConfig, policy_update

    torch.manual_seed(0)
    base, tok = load_model_and_tokenizer("tiny", device="cpu")
    packed = _grouped_batch(tok, group=2)
    B = len(packed)
    batch = Batch(packed, torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), torch.arange(B) // 2,
                  torch.zeros(packed.completion_ids.shape), {})
    ref = reference_model(base)
    out = {}
    for share in (False, True):
        model = copy.deepcopy(base)
        cfg = GRPOConfig(mu=2, micro_batch=4, bf16=False, group_size=2, beta=0.04, share_prompt_forward=share)
        m = policy_update(model, ref, PlainTrainable(model, torch.optim.SGD(model.parameters(), lr=0.5), None),
                          batch, cfg)
        out[share] = (m, [p.detach().clone() for p in model.parameters()])
    (m0, w0), (m1, w1) = out[False], out[True]
    assert max((a - b).abs().max().item() for a, b in zip(w0, base.parameters())) > 1e-4    # it trained
    assert max((a - b).abs().max().item() for a, b in zip(w0, w1)) < 1e-5
    for k in ("loss/total", "loss/kl", "policy/entropy", "grad/norm"):
        assert m0[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k


def test_lora_policy_and_its_adapters_off_reference(tiny):
    """peft-wrapped policy (gradients into the adapters) and the adapters-off reference view: shared == plain."""
    import copy

    from rlvr.distributed import reference_model
    from rlvr.distributed.config import LoRAConfig
    from rlvr.distributed.lora import apply_lora

    base, tok = tiny
    policy = apply_lora(copy.deepcopy(base), LoRAConfig(enabled=True, r=4))
    with torch.no_grad():                                   # adapters that change the output (B starts at 0)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ref = reference_model(policy)
    batch = _grouped_batch(tok)
    with torch.no_grad():
        r0 = completion_logprobs(ref, batch)[0]
        r1 = completion_logprobs(ref, batch, share_prompts=True)[0]
    assert (r0 - r1).abs().max() < 1e-5
    policy.train()
    grads = []
    for share in (False, True):
        policy.zero_grad()
        logp, _ = completion_logprobs(policy, batch, share_prompts=share)
        logp.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
    assert (logp.detach() - r1).abs().max() > 1e-3           # the adapters are on in the policy
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()) < 1e-5


def test_auto_setting_shares_on_the_cpu_only(tiny, monkeypatch):
    """"auto" (the trainers' default) resolves on the model's device: shared on the CPU, one pass per row on a
    GPU; True/False are taken as given; the reference view (not an nn.Module) resolves through its model."""
    import rlvr.trainers.common as common
    from rlvr.distributed import reference_model
    from rlvr.models.shared_prompt import share_prompts_on
    from rlvr.trainers.grpo import GRPOConfig

    model, tok = tiny
    assert GRPOConfig().share_prompt_forward == "auto"
    assert share_prompts_on(model, "auto") and share_prompts_on(reference_model(model), "auto")
    assert share_prompts_on(model, True) and not share_prompts_on(model, False)
    batch = _grouped_batch(tok)
    seen, hook = _positions_counter(model)
    with torch.no_grad():
        completion_logprobs(model.eval(), batch, share_prompts="auto")
    B, P = batch.prompt_ids.shape
    assert seen[0] == 3 * P + B * (batch.completion_ids.shape[1] - 1)       # shared
    monkeypatch.setattr(common, "module_device", lambda m: torch.device("cuda", 0))
    assert not share_prompts_on(model, "auto") and share_prompts_on(model, True)
    hook.remove()
