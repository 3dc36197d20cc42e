"""RLAIF / Constitutional AI: constitution files, critique → revision → pairs and SFT data (scripted engine),
position-debiased AI-judge labelling (scripted scorers), and the real-model scorer on the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlvr.errors import ConfigError
from rlvr.rollout import Rollout
from rlvr.trainers.dpo import encode_records, read_preference_records
from rlvr.trainers.rlaif import (Principle, RLAIFConfig, critique_and_revise, judge_preference, label_pairs,
                                load_constitution, model_scorer, revision_pairs, revision_sft, write_jsonl)
from rlvr.trainers.sft import SFTExample

REPO = Path(__file__).resolve().parents[2]


def test_shipped_constitution_loads():
    principles = load_constitution(REPO / "recipes" / "constitution.yaml")
    assert len(principles) >= 4 and len({p.name for p in principles}) == len(principles)
    assert all(p.critique and p.revision and p.judge for p in principles)


def test_constitution_formats_and_errors(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("# comment\nBe kind.\n\nBe right.\n")
    assert [p.critique for p in load_constitution(txt)] == ["Be kind.", "Be right."]
    bad = tmp_path / "c.yaml"
    bad.write_text("principles:\n  - {critique: x}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: principles\[0\] needs critique and revision"):
        load_constitution(bad)
    bad.write_text("rules: []\n")
    with pytest.raises(ConfigError, match="non-empty list 'principles'"):
        load_constitution(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_constitution(tmp_path / "missing.yaml")


class EchoEngine:
    """Critique prompts -> 'crit:<principle critique>'; revision prompts -> the response upper-cased, except
    the response 'same', which the 'revision' leaves unchanged."""

    tokenizer = None

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts.append(list(prompts))
        out = []
        for p in prompts:
            if p.endswith("Critique:"):
                text = "crit:" + p.split("Critique request: ")[1].split("\n")[0]
            else:
                response = p.split("|")[1]
                text = " " + (response if response == "same" else response.upper())
            out.append([Rollout([1], [2], text, [0.0], "stop")])
        return out


P = [Principle("a", "Find A.", "Fix A.", "Which is A?"), Principle("b", "Find B.", "Fix B.", "Which is B?")]


def test_critique_revise_pairs_and_sft():
    eng = EchoEngine()
    cfg = RLAIFConfig(critique_template="{prompt}|{response}|\nCritique request: {critique}\nCritique:",
                      revision_template="{prompt}|{response}|{critique_text}|{revision}|Revision:")
    revs = critique_and_revise(eng, ["p1", "p2", "p3"], ["good", "same", "ok"], P, cfg, seed=4)
    # the principle of each item is a seeded draw, and the critique/revision requests are that principle's
    again = critique_and_revise(EchoEngine(), ["p1", "p2", "p3"], ["good", "same", "ok"], P, cfg, seed=4)
    assert [r.principle for r in revs] == [r.principle for r in again]
    by_name = {p.name: p for p in P}
    for r, rev_prompt in zip(revs, eng.prompts[1]):
        assert r.critique == "crit:" + by_name[r.principle].critique
        assert f"|{r.critique}|{by_name[r.principle].revision}|" in rev_prompt
    assert [r.revision for r in revs] == ["GOOD", "same", "OK"]
    pairs = revision_pairs(revs)          # the unchanged revision is skipped
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("p1", "GOOD", "good"), ("p3", "OK", "ok")]
    assert revision_sft(revs) == [SFTExample("p1", "GOOD"), SFTExample("p3", "OK")]


def test_pairs_round_trip_into_dpo_data(tmp_path):
    from rlvr.trainers.common import load_model_and_tokenizer

    _, tok = load_model_and_tokenizer("tiny")
    revs = critique_and_revise(EchoEngine(), ["p1"], ["good"], P, RLAIFConfig(
        critique_template="{prompt}|{response}|\nCritique request: {critique}\nCritique:",
        revision_template="{prompt}|{response}|{critique_text}|{revision}|Revision:"))
    path = write_jsonl(tmp_path / "pairs.jsonl", revision_pairs(revs))
    items = encode_records(read_preference_records(path), tok, 64, paired=True)
    assert tok.decode(list(items[0].first), skip_special_tokens=True) == "good"     # lower-cased by the tokenizer
    sft = write_jsonl(tmp_path / "sft.jsonl", revision_sft(revs))
    assert json.loads(sft.read_text()) == {"prompt": "p1", "completion": "GOOD"}


def letter_scorer(prefers):
    """A fake judge: log-prob 0 for the letter whose option text contains `prefers`, -2 for the other."""
    def score(context, continuations):
        a = context.split("(A) ")[1].split("\n")[0]
        good = "A" if prefers in a else "B"
        return torch.tensor([0.0 if c == good else -2.0 for c in continuations])
    return score


def test_judge_is_position_debiased():
    cfg = RLAIFConfig()
    p = judge_preference(letter_scorer("kind"), "q", "a kind answer", "a rude answer", "Which?", cfg)
    expected = 1 / (1 + torch.exp(torch.tensor(-2.0))).item()
    assert p == pytest.approx(expected)
    assert judge_preference(letter_scorer("kind"), "q", "a rude answer", "a kind answer", "Which?", cfg) == \
        pytest.approx(1 - expected)
    always_a = lambda ctx, conts: torch.tensor([0.0 if c == "A" else -3.0 for c in conts])
    assert judge_preference(always_a, "q", "x", "y", "Which?", cfg) == pytest.approx(0.5)   # pure position bias


def test_label_pairs_orders_and_filters():
    items = [("q1", "rude", "kind"), ("q2", "kind", "rude")]
    out = label_pairs(letter_scorer("kind"), items, P, RLAIFConfig(), seed=0)
    assert [(o["chosen"], o["rejected"]) for o in out] == [("kind", "rude"), ("kind", "rude")]
    assert all(o["confidence"] > 0.8 and o["principle"] in ("a", "b") for o in out)
    always_a = lambda ctx, conts: torch.tensor([0.0 if c == "A" else -3.0 for c in conts])
    assert label_pairs(always_a, items, P, RLAIFConfig(min_confidence=0.1)) == []
    assert len(label_pairs(letter_scorer("kind"), items, P, RLAIFConfig(min_confidence=0.45))) == 0


def test_model_scorer_on_tiny_model():
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack

    model, tok = load_model_and_tokenizer("tiny")
    score = model_scorer(model, tok)
    lp = score("the better response is (", ["a", "b"])
    ids = tok("the better response is (")["input_ids"]
    ref, _ = completion_logprobs(model, pack([ids], [tok("a")["input_ids"]], tok.pad_token_id))
    assert lp.shape == (2,) and lp[0].item() == pytest.approx(ref.sum().item(), abs=1e-5)
    p = judge_preference(score, "1 + 1", "2", "3", "which is right?", RLAIFConfig())
    assert 0.0 < p < 1.0
    # the whole critique -> revision loop runs on a real engine (a random model writes gibberish)
    revs = critique_and_revise(get_engine("hf", model=model, tokenizer=tok), ["1 + 1 ="], ["3"], P,
                               RLAIFConfig(max_new_tokens=4), seed=0)
    assert len(revs) == 1 and revs[0].principle in ("a", "b")
