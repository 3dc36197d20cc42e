"""The multi-turn driver: batching per turn, the loss mask, log-prob alignment, the token budget rules, and
exact trainer/sampler log-prob agreement on real dialogues with the tiny model."""
from __future__ import annotations

import pytest
import torch

from rlvr.envs import Env, StepResult
from rlvr.errors import DataError
from rlvr.rollout import Rollout, SamplingParams
from rlvr.rollout.multiturn import feedback_fits, rollout_dialogues, turn_token_limit


@pytest.fixture(scope="module")
def tok():
    from rlvr.models.tiny import build_tiny_tokenizer
    return build_tiny_tokenizer()


class ScriptedEngine:
    """Answers with `reply(prompt_text, sample_index, turn_call)`; each token's log-prob is -(position+1)/100."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.calls = tokenizer, reply, []

    def generate(self, prompts, params):
        self.calls.append(([list(p) for p in prompts], params))
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            group = []
            for j in range(params.n):
                ids = self.tokenizer(self.reply(text, j), add_special_tokens=False)["input_ids"] + [2]   # + EOS
                cut = ids[:params.max_new_tokens]
                group.append(Rollout(prompt_ids=list(p), completion_ids=cut,
                                     text=self.tokenizer.decode(cut, skip_special_tokens=True),
                                     logprobs=[-(k + 1) / 100 for k in range(len(cut))],
                                     finish_reason="stop" if len(cut) == len(ids) else "length"))
            out.append(group)
        return out

    def update_weights(self, m):
        pass

    def close(self):
        pass


class CountEnv(Env):
    """Says "no N" after each turn (N = turns so far); done when the answer contains "ok"; r_t = t + 1."""

    def reset(self, example):
        self.t = 0
        return f"q{example}:"

    def step(self, text):
        self.t += 1
        if "ok" in text:
            return StepResult(None, float(self.t), True, {})
        return StepResult(f"\nno {self.t}\n", float(self.t), False, {})


def reply_ok_after(k):
    """Dialogue j (its first answer "a<j>" says which) answers "ok" once the prompt holds k + j feedback lines."""
    def reply(text, j):
        if ":a" in text:                     # a later turn (n = 1): recover j from the first answer
            j = int(text.split(":a", 1)[1][0])
        return "ok" if text.count("\nno ") >= k + j else f"a{j}"
    return reply


def test_turns_are_batched_groups_share_the_first_prompt(tok):
    eng = ScriptedEngine(tok, reply_ok_after(1))
    groups = rollout_dialogues(eng, CountEnv, [0, 1], SamplingParams(n=2, max_new_tokens=8, seed=3),
                               max_turns=4, max_tokens=200, tokenizer=tok)
    assert [len(g) for g in groups] == [2, 2]
    # turn 0: one prompt per example, n = G; turn 1: every dialogue (all said "a<j>"), n = 1; turn 2: sample 1 only
    (p0, s0), (p1, s1), (p2, s2) = eng.calls
    assert [tok.decode(p) for p in p0] == ["q0:", "q1:"] and s0.n == 2
    assert len(p1) == 4 and s1.n == 1 and len(p2) == 2
    assert len({s0.seed, s1.seed, s2.seed}) == 3                  # fresh noise per turn
    d = groups[1][1]
    assert d.turn_texts == ["a1", "a1", "ok"] and d.turn_rewards == [1.0, 2.0, 3.0] and d.end == "done"
    assert groups[1][0].turn_texts == ["a0", "ok"]
    # later turns are prompted with the exact dialogue tokens so far
    assert p2[1] == groups[1][1].ids[:len(p2[1])]


def test_loss_mask_covers_exactly_the_model_turns(tok):
    eng = ScriptedEngine(tok, reply_ok_after(2))
    (group,) = rollout_dialogues(eng, CountEnv, [7], SamplingParams(n=2, max_new_tokens=8), max_turns=5,
                                 max_tokens=200, tokenizer=tok)
    for d in group:
        assert len(d.ids) == len(d.full_loss_mask) and len(d.completion_ids) == len(d.logprobs) == len(d.turn_ids)
        assert tok.decode(d.prompt_ids) == "q7:"
        for t, text in enumerate(d.turn_texts):
            own = [i for i, tt in zip(d.completion_ids, d.turn_ids) if tt == t]
            assert tok.decode(own, skip_special_tokens=True) == text and own[-1] == 2   # ends with its EOS
            lps = [lp for lp, tt in zip(d.logprobs, d.turn_ids) if tt == t]
            assert lps == [-(k + 1) / 100 for k in range(len(own))]
        model = [i for i, m in zip(d.completion_ids, d.loss_mask) if m]
        env = [i for i, m in zip(d.completion_ids, d.loss_mask) if not m]
        assert tok.decode(model, skip_special_tokens=True) == "".join(d.turn_texts)
        assert tok.decode(env) == "".join(f"\nno {t + 1}\n" for t in range(d.num_turns - 1))
        assert all(lp == 0.0 for lp, m in zip(d.logprobs, d.loss_mask) if not m)
        assert all(tt == -1 for tt, m in zip(d.turn_ids, d.loss_mask) if not m)
        assert d.outcome == sum(d.turn_rewards)


def test_max_turns_ends_a_dialogue_the_env_would_continue(tok):
    eng = ScriptedEngine(tok, lambda text, j: "never")
    (group,) = rollout_dialogues(eng, CountEnv, [0], SamplingParams(n=2, max_new_tokens=8), max_turns=3,
                                 max_tokens=200, tokenizer=tok)
    assert all(d.num_turns == 3 and d.end == "max_turns" for d in group)
    assert tok.decode(group[0].completion_ids[-6:], skip_special_tokens=True) == "never"   # no trailing feedback


@pytest.mark.parametrize("state, max_new, budget, expected", [(10, 8, 100, 8), (95, 8, 100, 5), (100, 8, 100, 0)])
def test_turn_token_limit_hand_values(state, max_new, budget, expected):
    assert turn_token_limit(state, max_new, budget) == expected


@pytest.mark.parametrize("state, fb, budget, expected", [(10, 5, 16, True), (10, 6, 16, False), (0, 15, 16, True)])
def test_feedback_fits_hand_values(state, fb, budget, expected):
    assert feedback_fits(state, fb, budget) is expected


def test_token_budget_cuts_the_turn_then_ends_the_dialogue(tok):
    # state after turn 0: "q0:" (3) + "abcdef</s>" (7) = 10; feedback "\nno 1\n" (6) fits in 20 (10 + 6 + 1 <= 20);
    # turn 1 may then generate only 20 - 16 = 4 tokens; the next feedback cannot fit -> end "budget".
    eng = ScriptedEngine(tok, lambda text, j: "abcdef")
    (group,) = rollout_dialogues(eng, CountEnv, [0], SamplingParams(n=1, max_new_tokens=8), max_turns=5,
                                 max_tokens=20, tokenizer=tok)
    d = group[0]
    assert [p.max_new_tokens for _, p in eng.calls] == [8, 4]
    assert d.turn_texts == ["abcdef", "abcd"] and d.turn_finish == ["stop", "length"]
    assert d.end == "budget" and len(d.ids) == 20 and d.turn_rewards == [1.0, 2.0]


def test_first_prompt_over_budget_is_a_data_error(tok):
    eng = ScriptedEngine(tok, lambda text, j: "x")
    with pytest.raises(DataError, match="the first prompt has 4 tokens; grpo.env.max_tokens=4"):
        rollout_dialogues(eng, CountEnv, [10], SamplingParams(n=1), max_turns=2, max_tokens=4, tokenizer=tok)


def test_reset_must_not_differ_within_a_group(tok):
    class Random(CountEnv):
        k = 0

        def reset(self, example):
            Random.k += 1
            return f"q{Random.k}:"

    with pytest.raises(ValueError, match="reset must depend on the example only"):
        rollout_dialogues(ScriptedEngine(tok, lambda t, j: "x"), Random, [0], SamplingParams(n=2), max_turns=2,
                          max_tokens=50, tokenizer=tok)


def test_trainer_logprobs_match_the_sampler_on_model_tokens_with_the_tiny_model():
    """Dialogues from the HF engine, packed for training (env tokens attended, not trained), scored in fp32 by
    completion_logprobs: equal to the sampler's log-probs on every model token -> masks and positions line up."""
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer
    from rlvr.trainers.grpo_multiturn import pack_dialogues

    model, tok = load_model_and_tokenizer("tiny")
    engine = get_engine("hf", model=model, tokenizer=tok)
    groups = rollout_dialogues(engine, CountEnv, [3, 45], SamplingParams(n=3, max_new_tokens=6, seed=0),
                               max_turns=3, max_tokens=40, tokenizer=tok)
    dialogues = [d for g in groups for d in g]
    assert any(d.num_turns > 1 for d in dialogues)
    packed, turn_ids, sampler = pack_dialogues(dialogues, tok.pad_token_id)
    assert packed.completion_attention.sum() > packed.completion_mask.sum()      # env tokens attended only
    with torch.no_grad():
        logp, _ = completion_logprobs(model.eval(), packed)
    m = packed.completion_mask
    assert torch.equal(m, turn_ids >= 0)
    assert (logp - sampler)[m].abs().max() < 1e-4


def test_vllm_engine_dialogues_score_the_same_in_the_trainer(tiny_engine, tiny_model):
    """The vLLM backend takes the token-id prompts of later turns; trainer log-probs agree on model tokens."""
    from rlvr.trainers.common import completion_logprobs
    from rlvr.trainers.grpo_multiturn import pack_dialogues

    tok = tiny_engine.tokenizer
    groups = rollout_dialogues(tiny_engine, CountEnv, [3, 45], SamplingParams(n=3, max_new_tokens=6, seed=0),
                               max_turns=3, max_tokens=40, tokenizer=tok)
    dialogues = [d for g in groups for d in g]
    assert any(d.num_turns > 1 for d in dialogues)
    packed, _, sampler = pack_dialogues(dialogues, tok.pad_token_id)
    with torch.no_grad():
        logp, _ = completion_logprobs(tiny_model, packed)
    m = packed.completion_mask
    assert (logp - sampler)[m].abs().mean() < 1e-3


def test_hf_engine_token_id_prompts_equal_text_prompts():
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny")
    engine = get_engine("hf", model=model, tokenizer=tok)
    params = SamplingParams(n=2, max_new_tokens=5, seed=4)
    by_text = engine.generate(["12+34=", "7+8="], params)
    by_ids = engine.generate([tok("12+34=")["input_ids"], tok("7+8=")["input_ids"]], params)
    assert [[r.completion_ids for r in g] for g in by_text] == [[r.completion_ids for r in g] for g in by_ids]
    assert by_ids[0][0].prompt_ids == tok("12+34=")["input_ids"]
    with pytest.raises(ValueError, match="must not be empty"):
        engine.generate([[]], params)
