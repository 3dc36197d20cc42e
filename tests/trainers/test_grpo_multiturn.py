"""GRPO with `grpo.env`: the multi-turn batch (masks, rewards, per-token credit), the reduction to the single-turn
path at max_turns=1, and a 2-step `rlvr train` smoke run with the arithmetic retry env."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from rlvr.algos import grpo_advantages
from rlvr.algos.credit import discounted_returns
from rlvr.cli import main
from rlvr.rollout import Rollout
from rlvr.trainers.grpo import GRPOConfig, PromptStream, collect_batch, policy_update
from rlvr.trainers.grpo_multiturn import TurnCredit
from rlvr.trainers.logger import read_jsonl
from tasks.registry import get_task

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok():
    from rlvr.models.tiny import build_tiny_tokenizer
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def arith():
    return get_task("arithmetic", digits=1, ops="+", answer_format="plain", n_test=5, n_train=20)


class RetryPolicy:
    """Sample 0 of each group answers right at once; the others answer wrong first and right once told so."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            a, b = map(int, re.findall(r"(\d+) \+ (\d+) =", text)[-1])
            group = []
            for j in range(params.n):
                ans = str(a + b) if (j == 0 or "wrong" in text) else str(a + b + 1)
                ids = self.tokenizer(ans, add_special_tokens=False)["input_ids"] + [2]
                group.append(Rollout(list(p), ids, ans, [-0.1] * len(ids), "stop"))
            out.append(group)
        return out


def cfg_for(**env) -> GRPOConfig:
    return GRPOConfig(prompts_per_step=2, group_size=4, max_new_tokens=8, dynamic_sampling=False,
                      env={"name": "arithmetic_retry", "max_turns": 3, **env})


def test_correct_on_turn_two_gets_the_discounted_reward(arith, tok):
    exs = arith.load("train")
    cfg = cfg_for(options={"turn_discount": 0.5})
    batch = collect_batch(RetryPolicy(tok), arith, exs, PromptStream(len(exs), 0), cfg, tok)
    assert batch.rewards.tolist() == [1.0, 0.5, 0.5, 0.5] * 2
    assert batch.metrics["multiturn/turns_mean"] == pytest.approx(1.75)
    pb = batch.packed
    # Env feedback is attended but carries no loss; model tokens carry loss.
    for i in range(len(pb)):
        question = tok.decode(pb.prompt_ids[i][pb.prompt_mask[i]].tolist())          # "a + b ="
        gold = str(sum(map(int, re.findall(r"\d+", question))))
        ids, loss, seen = pb.completion_ids[i].tolist(), pb.completion_mask[i].tolist(), pb.completion_attention[i]
        trained = tok.decode([t for t, m in zip(ids, loss) if m], skip_special_tokens=True)
        env = tok.decode([t for t, m, a in zip(ids, loss, seen.tolist()) if a and not m])
        if i % 4 == 0:
            assert (trained, env) == (gold, "")
        else:
            assert (trained, env) == (str(int(gold) + 1) + gold, f"\nwrong, try again.\n{question}")


def test_outcome_credit_gives_every_turn_the_outcome_advantage(arith, tok):
    exs = arith.load("train")
    batch = collect_batch(RetryPolicy(tok), arith, exs, PromptStream(len(exs), 0),
                          cfg_for(options={"turn_discount": 0.5}), tok)
    adv, _ = batch.advantages(batch.rewards, batch.group_ids)
    assert adv.shape == batch.packed.completion_ids.shape
    a0, _ = grpo_advantages(batch.rewards, batch.group_ids)         # turn 0: the plain group z-score
    turn_ids = batch.advantages.turn_ids
    assert torch.equal(turn_ids >= 0, batch.packed.completion_mask)
    for i in range(len(batch.rewards)):
        first = turn_ids[i] == 0
        assert first.sum() >= 2 and torch.allclose(adv[i][first], a0[i].expand(int(first.sum())))
        # turn 1 (dialogues 1..3 of a group, all with outcome 0.5): no spread -> 0; env tokens and padding: 0
        assert bool((turn_ids[i] == 1).any()) is (i % 4 != 0)
        assert adv[i][~first].abs().max() == 0


def test_per_turn_credit_discounts_the_later_reward_to_earlier_turns(arith, tok):
    exs = arith.load("train")
    cfg = cfg_for(credit="per_turn", gamma=0.9)
    batch = collect_batch(RetryPolicy(tok), arith, exs, PromptStream(len(exs), 0), cfg, tok)
    assert batch.advantages.turn_rewards[:4] == [[1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    adv, _ = batch.advantages(batch.rewards, batch.group_ids)
    # turn 0 returns: 1, then γ·1 = 0.9 three times -> z-scores of [1, .9, .9, .9]
    a0, _ = grpo_advantages(torch.tensor([1.0, 0.9, 0.9, 0.9]), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(adv[:4, 0], a0, atol=1e-5)
    assert discounted_returns([0.0, 1.0], 0.9) == pytest.approx([0.9, 1.0])


def test_dynamic_sampling_drops_groups_without_any_turn_spread(arith, tok):
    class AlwaysRight(RetryPolicy):
        def generate(self, prompts, params):
            return super().generate([self.tokenizer("wrong " + self.tokenizer.decode(p), add_special_tokens=False)
                                     ["input_ids"] for p in prompts], params)

    exs = arith.load("train")
    cfg = cfg_for().model_copy(update={"dynamic_sampling": True, "max_sampling_rounds": 2})
    batch = collect_batch(AlwaysRight(tok), arith, exs, PromptStream(len(exs), 0), cfg, tok)
    assert batch.packed is None and batch.metrics["sampling/dropped_groups"] == 4


def test_kl_reward_shaping_goes_to_the_last_turn():
    credit = TurnCredit([[0.0, 1.0], [1.0]], torch.tensor([1.0, 1.0]), torch.tensor([[0, -1, 1], [0, -1, -1]]),
                        discounted_returns, 0.5, lambda r, g: (r, {}))   # identity "estimator" shows the returns
    adv, _ = credit(torch.tensor([0.8, 1.0]), torch.tensor([0, 0]))
    # dialogue 0: r = [0, 1 - 0.2] -> G = [0.4, 0.8]; dialogue 1: G = [1]
    assert torch.allclose(adv, torch.tensor([[0.4, 0.0, 0.8], [1.0, 0.0, 0.0]]))


def test_max_turns_one_reproduces_the_single_turn_update_exactly(arith, monkeypatch):
    """Same samples, rewards, advantages and parameter update as the single-turn path (fp32)."""
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import build_optimizer, load_model_and_tokenizer
    from tasks.base import Score
    from verifiers.base import Verdict

    def even_length_is_right(texts, exs, **kw):     # the random tiny model is never right: give it varied rewards
        verdicts = [Verdict("correct", 1.0) if len(t) % 2 == 0 else Verdict("wrong", 0.0) for t in texts]
        return [Score(reward=v.reward, verdicts={"integer": v}, primary="integer") for v in verdicts]

    monkeypatch.setattr(arith, "score", even_length_is_right)
    exs = arith.load("train")
    base, tok = load_model_and_tokenizer("tiny")
    results = []
    for env in (None, {"name": "arithmetic_retry", "max_turns": 1}):
        model = copy.deepcopy(base)
        cfg = GRPOConfig(prompts_per_step=3, group_size=4, max_new_tokens=6, dynamic_sampling=False, bf16=False,
                         lr=1e-2, env=env)
        batch = collect_batch(get_engine("hf", model=model, tokenizer=tok), arith, exs, PromptStream(len(exs), 1),
                              cfg, tok, seed=5)
        m = policy_update(model.train(), None, build_optimizer(model, cfg.lr), batch, cfg)
        results.append((batch, m, model.state_dict()))
    (b1, m1, s1), (b2, m2, s2) = results
    assert torch.equal(b1.packed.completion_ids, b2.packed.completion_ids)
    assert torch.equal(b1.rewards, b2.rewards) and 0 < b1.rewards.sum() < len(b1.rewards)
    assert m1["grad/norm"] > 0
    for k in ("loss/total", "grad/norm", "response/length_mean", "perf/train_tokens"):
        assert m1[k] == pytest.approx(m2[k], rel=1e-6, abs=1e-9), k
    assert all(torch.allclose(s1[k], s2[k], atol=1e-7) for k in s1)


def test_rlvr_train_smoke_with_the_retry_env(tmp_path):
    out = tmp_path / "run"
    args = ["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}",
            "task.options={digits: 1, ops: '+', reverse_answer: true, answer_format: plain, n_test: 10, n_train: 30}",
            "task.eval_limit=6", "sft.enabled=false", "control.enabled=false", "grpo.steps=2",
            "grpo.prompts_per_step=3", "grpo.group_size=4", "grpo.max_new_tokens=10", "grpo.eval_every=2",
            "grpo.max_sampling_rounds=2", "grpo.dynamic_sampling=false", "eval.n=2", "eval.ks=[1,2]",
            "eval.max_new_tokens=10", "grpo.env.name=arithmetic_retry", "grpo.env.max_turns=3",
            "grpo.env.credit=per_turn", "grpo.env.gamma=0.9", "grpo.env.max_tokens=96",
            "eval.env={name: arithmetic_retry, max_turns: 3, max_tokens: 96}"]
    assert main(args) == 0
    rows = read_jsonl(out / "grpo" / "grpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "multiturn/turns_mean", "multiturn/env_token_frac", "outcome/correct",
                "loss/total", "rollout/logp_abs_diff"):
        assert key in rows[0], key
    assert rows[0]["multiturn/turns_mean"] > 1.0          # the random tiny model is wrong -> it retries
    assert rows[0]["multiturn/tokens_mean"] <= 96
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass@1_end"] is not None
    ev = summary["eval_end"]                              # eval.env: greedy dialogues, solved within t turns
    within = [ev[f"multiturn_pass@1_turn{t}"] for t in (1, 2, 3)]
    assert within == sorted(within) and ev["multiturn_pass@1"] == within[-1] and 1.0 <= ev["multiturn_turns_mean"] <= 3
    assert within[0] == ev["greedy_pass@1"]               # the first answer is the single-turn greedy answer
    assert "multiturn_pass@1" in (out / "report.md").read_text()


def test_unknown_env_in_a_recipe_is_one_line(capsys):
    code = main(["train", str(REPO / "recipes/r1_mini.yaml"), "grpo.env.name=nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "grpo.env.name" in err and "unknown environment" in err
