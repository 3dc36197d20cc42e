"""Multi-turn evaluation (eval.env): greedy dialogues with the retry env, solved within t turns."""
from __future__ import annotations

import pytest

from rlvr.envs import MultiTurnConfig
from rlvr.eval import multiturn_greedy_eval, solved_turn
from rlvr.rollout import Rollout
from rlvr.rollout.multiturn import Dialogue
from tasks.registry import get_task


@pytest.fixture(scope="module")
def tok():
    from rlvr.models.tiny import build_tiny_tokenizer
    return build_tiny_tokenizer()


class RetryingEngine:
    """Example i (its position in the test split) answers wrongly on its first i turns, then correctly; the last
    example never gets it right. Greedy only (the eval must ask for temperature 0)."""

    def __init__(self, tokenizer, examples):
        self.tokenizer = tokenizer
        self.examples = {e.question: (i, e) for i, e in enumerate(examples)}

    def generate(self, prompts, params):
        assert params.temperature == 0.0 and params.n == 1
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            question = next(q for q in self.examples if text.startswith(q))
            i, ex = self.examples[question]
            wrong_so_far = text.lower().count("wrong, try again.")   # the char tokenizer lower-cases
            last = i == len(self.examples) - 1
            answer = str(int(ex.gold) + 1) if last or wrong_so_far < i else ex.gold
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            out.append([Rollout(prompt_ids=list(p), completion_ids=ids, text=answer, logprobs=[0.0] * len(ids),
                                finish_reason="stop")])
        return out


def test_solved_within_t_turns(tok):
    task = get_task("arithmetic", digits=1, ops="+", answer_format="plain", n_test=4, n_train=10)
    exs = task.load("test")
    env = MultiTurnConfig(name="arithmetic_retry", max_turns=3, max_tokens=200)
    m = multiturn_greedy_eval(task, RetryingEngine(tok, exs), env, tokenizer=tok, max_new_tokens=8)
    # solved on turns 0, 1, 2 and never: within 1 / 2 / 3 turns = 1/4, 2/4, 3/4; turns used 1 + 2 + 3 + 3
    assert m == {"multiturn_pass@1_turn1": 0.25, "multiturn_pass@1_turn2": 0.5, "multiturn_pass@1_turn3": 0.75,
                 "multiturn_pass@1": 0.75, "multiturn_turns_mean": 2.25}


def test_solved_turn_reads_statuses_then_rewards():
    d = Dialogue(example=None, turn_infos=[{"status": "wrong"}, {"status": "correct"}], turn_rewards=[0.0, 0.5])
    assert solved_turn(d) == 1
    assert solved_turn(Dialogue(example=None, turn_infos=[{}, {}], turn_rewards=[0.0, 1.0])) == 1
    assert solved_turn(Dialogue(example=None, turn_infos=[{"status": "wrong"}], turn_rewards=[1.0])) is None


def test_recipe_and_workflow_eval_take_an_env():
    from rlvr.recipe import load_recipe
    r = load_recipe("recipes/r1_mini_retry.yaml")
    assert r.eval.env is not None and r.eval.env.name == r.grpo.env.name
