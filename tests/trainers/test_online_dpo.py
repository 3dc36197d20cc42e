"""Online / iterative DPO and SPIN: pair builders on scripted samples (best vs worst, ties dropped; SFT target vs
own sample), and resumable rounds on the tiny model."""
from __future__ import annotations

import copy

import pytest
import torch

from rlvr.config import validate
from rlvr.errors import ConfigError
from rlvr.rollout import Rollout
from rlvr.trainers.dpo import DPOConfig
from rlvr.trainers.logger import read_jsonl
from rlvr.trainers.online_dpo import OnlineDPOConfig, PairContext, spin_pairs, train_online_dpo, verifier_pairs
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from verifiers.base import get_verifier


class Tok:
    """Characters 'a'.. map to ids 10..; enough for the scripted tests."""
    pad_token_id, eos_token_id = 0, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [10 + ord(c) % 50 for c in text]}


class ScriptedEngine:
    """Prompt 'q<i>' is answered with SCRIPT[q<i>] (one text per sample); completion ids spell the text."""

    tokenizer = None

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params.n))
        tok = Tok()
        return [[Rollout(prompt_ids=[5, int(p[1:])], completion_ids=tok(t)["input_ids"] + [2], text=t,
                         logprobs=[-0.1] * (len(t) + 1), finish_reason="stop") for t in self.script[p][:params.n]]
                for p in prompts]


def make_task(n):
    exs = [Example(id=str(i), question=f"q{i}", gold=str(i), meta={"solution": str(i)}) for i in range(n)]
    task = Task(name="scripted", loader=lambda split, limit: exs, splits=("train",),
                template=PromptTemplate(plain="{user}", chat=False),
                verifiers=[WeightedVerifier(get_verifier("integer"), 1.0)])
    return task, exs


def in_order():
    """A PromptStream stand-in whose order is the identity, so a test reads like its script."""
    class Identity:
        def __init__(self, n, seed, cursor=0):
            self.cursor = cursor

        def take(self, k):
            out = list(range(self.cursor, self.cursor + k))
            self.cursor += k
            return out
    return Identity


def test_verifier_pairs_best_vs_worst_ties_dropped(monkeypatch):
    import rlvr.trainers.online_dpo as O

    task, exs = make_task(3)
    script = {"q0": ["7", "0", "0", "5"],     # correct = "0": best = first "0" (index 1), worst = "7" (index 0)
              "q1": ["1", "1", "1", "1"],     # all correct: tie, dropped
              "q2": ["9", "8", "2", "x"]}     # one correct
    monkeypatch.setattr(O, "PromptStream", in_order())
    cfg = OnlineDPOConfig(prompts_per_round=3, samples_per_prompt=4, max_new_tokens=4)
    ctx = PairContext(ScriptedEngine(script), task, Tok(), exs, cfg)
    items, m = verifier_pairs(ctx, 0, seed=0)
    tok = Tok()
    assert len(items) == 2 and m["pairs/kept"] == 2 and m["pairs/dropped_ties"] == 1
    assert items[0].prompt == (5, 0) and items[0].first == tuple(tok("0")["input_ids"] + [2])
    assert items[0].second == tuple(tok("7")["input_ids"] + [2])
    assert items[1].first == tuple(tok("2")["input_ids"] + [2])
    assert items[1].second == tuple(tok("9")["input_ids"] + [2])
    assert m["reward/mean"] == pytest.approx((2 + 4 + 1) / 12)


def test_spin_pairs_target_vs_own_sample(monkeypatch):
    import rlvr.trainers.online_dpo as O

    task, exs = make_task(3)
    monkeypatch.setattr(O, "PromptStream", in_order())
    cfg = OnlineDPOConfig(pairs="spin", prompts_per_round=3, target="{solution}", max_new_tokens=4)
    ctx = PairContext(ScriptedEngine({"q0": ["5"], "q1": ["1"], "q2": ["22"]}), task, Tok(), exs, cfg)
    items, m = spin_pairs(ctx, 0, seed=0)
    tok = Tok()
    assert m["pairs/kept"] == 2 and m["pairs/identical"] == 1      # q1's sample equals its target
    assert [(it.first, it.second) for it in items] == [
        (tuple(tok("0")["input_ids"] + [2]), tuple(tok("5")["input_ids"] + [2])),
        (tuple(tok("2")["input_ids"] + [2]), tuple(tok("22")["input_ids"] + [2]))]
    bad = PairContext(ctx.engine, task, Tok(), exs, cfg.model_copy(update={"target": "{nope}"}))
    with pytest.raises(ConfigError, match="target: field 'nope'"):
        spin_pairs(bad, 0, seed=0)


def test_round_prompts_are_fresh_each_round():
    task, exs = make_task(10)
    cfg = OnlineDPOConfig(pairs="spin", prompts_per_round=5)
    eng = ScriptedEngine({f"q{i}": ["x"] for i in range(10)})
    ctx = PairContext(eng, task, Tok(), exs, cfg)
    spin_pairs(ctx, 0, seed=3)
    spin_pairs(ctx, 1, seed=3)
    first, second = eng.calls[0][0], eng.calls[1][0]
    assert sorted(first + second) == sorted(f"q{i}" for i in range(10))   # one epoch split over two rounds


def test_config_checks():
    with pytest.raises(ConfigError, match="unknown pair builder 'best'"):
        validate(OnlineDPOConfig, {"pairs": "best"})
    with pytest.raises(ConfigError, match="samples_per_prompt >= 2"):
        validate(OnlineDPOConfig, {"samples_per_prompt": 1})
    with pytest.raises(ConfigError, match="dpo.loss"):
        validate(OnlineDPOConfig, {"dpo": {"loss": "nope"}})


# ------------------------------------------------------------------------------------ tiny-model rounds
@pytest.fixture(scope="module")
def tiny():
    from rlvr.trainers.common import load_model_and_tokenizer
    return load_model_and_tokenizer("tiny")


def run_rounds(tiny, out, rounds, resume=False, pairs="spin"):
    from rlvr.rollout import get_engine
    from tasks.registry import get_task

    torch.manual_seed(0)
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    task = get_task("arithmetic", digits=1, ops="+", reverse_answer=True, answer_format="plain", n_test=5,
                    n_train=20)
    cfg = OnlineDPOConfig(rounds=rounds, pairs=pairs, prompts_per_round=4, samples_per_prompt=4,
                          target="{written_answer}", max_new_tokens=3, temperature=1.0,
                          dpo=DPOConfig(steps=2, batch_size=2, micro_batch=2, lr=1e-3, bf16=False,
                                        checkpoint_every=1))
    engine = get_engine("hf", model=model, tokenizer=tok)
    summary = train_online_dpo(model, tok, engine, task, task.load("train"), cfg, out_dir=out, resume=resume,
                               evaluate=lambda m: 0.5, log_fn=lambda s: None)
    return model, summary


def test_rounds_resume_reproduces_an_uninterrupted_run(tiny, tmp_path):
    straight, s = run_rounds(tiny, tmp_path / "a", 2)
    assert s["rounds"] == 2 and s["evals"] == [(1, 0.5), (2, 0.5)]
    rows = read_jsonl(tmp_path / "a" / "online_dpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["pairs/kept"] >= 1 and "dpo/loss/total" in rows[0]
    assert (tmp_path / "a" / "round-01" / "DONE.json").exists()
    run_rounds(tiny, tmp_path / "b", 1)                       # stopped after round 0
    resumed, _ = run_rounds(tiny, tmp_path / "b", 2, resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_verifier_rounds_on_tiny_model(tiny, tmp_path):
    _, s = run_rounds(tiny, tmp_path, 1, pairs="verifier")
    row = read_jsonl(tmp_path / "online_dpo_metrics.jsonl")[0]
    assert "pairs/dropped_ties" in row and "reward/mean" in row
    assert row["pairs/kept"] + row["pairs/dropped_ties"] == 4
