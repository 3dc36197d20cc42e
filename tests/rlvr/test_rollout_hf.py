"""HF rollout backend on the tiny model: shapes, seeding, greedy, logprobs, finish reasons, stop strings."""
from __future__ import annotations

import pytest
import torch

from rlvr.models.tiny import build_tiny_model
from rlvr.rollout import Rollout, RolloutEngine, SamplingParams, get_engine, list_engines

PROMPTS = ["12+34=", "what is 7*8?\n", "a"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The tiny model gains nothing from intra-op threads, and on a shared CPU OpenMP barriers stall for whole
    # scheduler slices (measured 20x slower), so these tests run single-threaded; the setting is restored.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return get_engine("hf", model=str(tiny_dir))


def forward_logprobs(model, r: Rollout, temperature: float) -> torch.Tensor:
    """Reference: one unpadded forward pass, log_softmax(logits / T) at the completion tokens."""
    ids = torch.tensor([r.prompt_ids + r.completion_ids], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0].float().cpu()
    p = len(r.prompt_ids)
    lp = torch.log_softmax(logits[p - 1:-1] / temperature, dim=-1)
    return lp.gather(1, torch.tensor(r.completion_ids)[:, None]).squeeze(1)


def test_registry_and_protocol(engine):
    assert "hf" in list_engines()
    assert isinstance(engine, RolloutEngine)
    with pytest.raises(KeyError, match="unknown rollout backend 'nope'; known: .*hf"):
        get_engine("nope")


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="min_new_tokens"):
        SamplingParams(max_new_tokens=4, min_new_tokens=5)
    assert SamplingParams(stop="</a>").stop == ("</a>",)
    assert SamplingParams(stop=["x", "y"]).stop == ("x", "y")


def test_shapes_and_grouping(engine):
    params = SamplingParams(n=4, max_new_tokens=12, seed=0)
    out = engine.generate(PROMPTS, params)
    assert [len(group) for group in out] == [4, 4, 4]
    tok = engine.tokenizer
    for prompt, group in zip(PROMPTS, out):
        for r in group:
            assert r.prompt_ids == tok(prompt)["input_ids"]
            assert 1 <= r.num_tokens <= 12 and len(r.logprobs) == r.num_tokens
            assert all(lp <= 0 for lp in r.logprobs)
            assert r.finish_reason in ("stop", "length")
            assert r.text == tok.decode(r.completion_ids, skip_special_tokens=True)


def test_seed_determinism_and_rng_isolation(engine):
    params = SamplingParams(n=3, max_new_tokens=10, seed=7)
    torch.manual_seed(0)
    before = torch.rand(2)
    torch.manual_seed(0)
    a = engine.generate(PROMPTS, params)
    assert torch.equal(torch.rand(2), before)               # caller's RNG stream untouched
    b = engine.generate(PROMPTS, params)
    c = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, seed=8))
    ids = lambda out: [[r.completion_ids for r in g] for g in out]  # noqa: E731
    assert ids(a) == ids(b)
    assert [[r.logprobs for r in g] for g in a] == [[r.logprobs for r in g] for g in b]
    assert ids(a) != ids(c)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 0), (1.3, 5)])
def test_logprobs_match_forward_pass(engine, temperature, top_k):
    params = SamplingParams(n=4, max_new_tokens=16, temperature=temperature, top_k=top_k, seed=1)
    for group in engine.generate(PROMPTS, params):
        for r in group:
            ref = forward_logprobs(engine.model, r, temperature)
            assert torch.allclose(torch.tensor(r.logprobs), ref, atol=1e-4), (r.logprobs, ref.tolist())


def test_greedy_is_argmax_and_padding_invariant(engine):
    params = SamplingParams(n=2, max_new_tokens=12, temperature=0.0)
    batched = engine.generate(PROMPTS, params)
    for prompt, group in zip(PROMPTS, batched):
        r = group[0]
        assert group[1].completion_ids == r.completion_ids          # greedy copies are identical
        ids = torch.tensor([r.prompt_ids + r.completion_ids], device=engine.model.device)
        with torch.no_grad():
            logits = engine.model(ids).logits[0].cpu()
        p = len(r.prompt_ids)
        assert logits[p - 1:-1].argmax(-1).tolist() == r.completion_ids
        assert torch.allclose(torch.tensor(r.logprobs), forward_logprobs(engine.model, r, 1.0), atol=1e-4)
        alone = engine.generate([prompt], params)[0][0]           # no left padding at all
        assert alone.completion_ids == r.completion_ids


def test_top_k_one_equals_greedy(engine):
    greedy = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, temperature=0.0))
    topk1 = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, temperature=1.0, top_k=1, seed=3))
    assert [g[0].completion_ids for g in greedy] == [g[0].completion_ids for g in topk1]


def test_finish_reasons_and_eos_stripping(engine):
    # Hot sampling over a 74-token vocab: EOS (p ~ 1/74 per step) ends some rollouts, others hit the budget.
    eos = engine.tokenizer.eos_token_id
    out = engine.generate(PROMPTS * 6, SamplingParams(n=4, max_new_tokens=40, temperature=3.0, seed=0))
    rollouts = [r for g in out for r in g]
    reasons = {r.finish_reason for r in rollouts}
    assert reasons == {"stop", "length"}
    for r in rollouts:
        assert eos not in r.completion_ids[:-1]                     # nothing after the first EOS
        if r.finish_reason == "stop":
            assert r.completion_ids[-1] == eos and len(r.logprobs) == r.num_tokens
        else:
            assert r.num_tokens == 40 and r.completion_ids[-1] != eos
        assert "</s>" not in r.text and "<pad>" not in r.text


def test_min_new_tokens_masks_eos(engine):
    eos = engine.tokenizer.eos_token_id
    out = engine.generate(PROMPTS * 4, SamplingParams(n=4, max_new_tokens=30, min_new_tokens=20,
                                                      temperature=3.0, seed=0))
    for r in (r for g in out for r in g):
        assert eos not in r.completion_ids[:20]
        assert r.num_tokens >= 20


def test_stop_strings(engine):
    tok = engine.tokenizer
    params = SamplingParams(n=4, max_new_tokens=40, temperature=2.0, seed=5, stop=("e", "q7"))
    out = engine.generate(PROMPTS * 3, params)
    stopped = [r for g in out for r in g if r.stop_str is not None]
    assert stopped, "no rollout hit a stop string; pick another seed"
    for r in stopped:
        assert r.finish_reason == "stop" and r.text.endswith(r.stop_str)
        before = tok.decode(r.completion_ids[:-1], skip_special_tokens=True)
        assert "e" not in before and "q7" not in before                 # stopped at the first occurrence
    for r in (r for g in out for r in g if r.stop_str is None):
        assert "e" not in r.text and "q7" not in r.text
    excluded = engine.generate(PROMPTS * 3, SamplingParams(**{**params.__dict__,
                                                              "include_stop_str_in_output": False}))
    for g_in, g_ex in zip(out, excluded):
        for a, b in zip(g_in, g_ex):
            assert a.completion_ids == b.completion_ids
            assert b.text == (a.text[:-len(a.stop_str)] if a.stop_str else a.text)


def test_chunking_does_not_change_greedy(tiny_dir, engine):
    small = get_engine("hf", model=engine.model, tokenizer=engine.tokenizer, max_batch_sequences=2)
    params = SamplingParams(n=3, max_new_tokens=8, temperature=0.0)
    a = small.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    assert [[r.completion_ids for r in g] for g in a] == [[r.completion_ids for r in g] for g in b]


def test_bf16_autocast_runs(engine):
    bf16 = get_engine("hf", model=engine.model, tokenizer=engine.tokenizer, autocast_bf16=True)
    out = bf16.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=0))
    assert all(len(r.logprobs) == r.num_tokens for g in out for r in g)
    assert next(engine.model.parameters()).dtype == torch.float32     # weights untouched


def test_shared_module_and_update_weights(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model.train()
    eng = get_engine("hf", model=model, tokenizer=tok)
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
    before = eng.generate(PROMPTS, greedy)
    assert model.training                                            # mode restored after generating
    eng.update_weights(model)                                        # same module: no-op
    other = AutoModelForCausalLM.from_pretrained(build_tiny_model(tiny_dir.parent / "other", seed=1))
    eng.update_weights(other.state_dict())
    after = eng.generate(PROMPTS, greedy)
    expected = get_engine("hf", model=other, tokenizer=tok).generate(PROMPTS, greedy)
    ids = lambda out: [g[0].completion_ids for g in out]  # noqa: E731
    assert ids(after) == ids(expected) and ids(after) != ids(before)
    eng.close()
    with pytest.raises(RuntimeError, match="close"):
        eng.generate(PROMPTS, greedy)


def test_model_generation_defaults_do_not_leak(tiny_dir):
    # Hub models ship sampling defaults (Qwen: top_k=20, repetition_penalty=1.05, ...); RL sampling must ignore them.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    gc = model.generation_config
    gc.top_k, gc.top_p, gc.temperature, gc.repetition_penalty, gc.do_sample = 1, 0.1, 0.05, 3.0, True
    eng = get_engine("hf", model=model, tokenizer=AutoTokenizer.from_pretrained(tiny_dir))
    a = eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=10, seed=0))
    b = eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=10, seed=1))
    assert [[r.completion_ids for r in g] for g in a] != [[r.completion_ids for r in g] for g in b]
    for r in (r for g in a for r in g):
        assert torch.allclose(torch.tensor(r.logprobs), forward_logprobs(model, r, 1.0), atol=1e-4)
    greedy = eng.generate(PROMPTS, SamplingParams(max_new_tokens=10, temperature=0.0))
    for g in greedy:
        ids = torch.tensor([g[0].prompt_ids + g[0].completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0]
        assert logits[len(g[0].prompt_ids) - 1:-1].argmax(-1).tolist() == g[0].completion_ids
