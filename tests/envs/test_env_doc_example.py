"""The "add an env in one small file" example of docs/multiturn.md runs as written."""
from __future__ import annotations

import re
from pathlib import Path

from rlvr.envs import ENVS, make_env
from rlvr.rollout import Rollout, SamplingParams
from rlvr.rollout.multiturn import rollout_dialogues
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from verifiers.base import get_verifier

DOC = Path(__file__).resolve().parents[2] / "docs" / "multiturn.md"


class Bisect:
    """Guesses by bisection on [0, 100], reading "higher"/"lower" from the dialogue so far."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            lo, hi = 0, 100
            for guess, hint in re.findall(r"(\d+)</s>\n(higher|lower)", self.tokenizer.decode(p)):
                lo, hi = (int(guess) + 1, hi) if hint == "higher" else (lo, int(guess) - 1)
            ids = self.tokenizer(str((lo + hi) // 2), add_special_tokens=False)["input_ids"] + [2]
            out.append([Rollout(list(p), ids, str((lo + hi) // 2), [0.0] * len(ids), "stop")] * params.n)
        return out


def test_doc_env_example_registers_and_runs():
    from rlvr.models.tiny import build_tiny_tokenizer

    code = re.search(r"```python\n(from rlvr.envs.base import .*?)```", DOC.read_text(), re.S).group(1)
    try:
        exec(compile(code, str(DOC), "exec"), {"__name__": "doc_example"})
        tok = build_tiny_tokenizer()
        task = Task(name="guess", loader=lambda s, n: [], template=PromptTemplate(plain="guess:", chat=False),
                    verifiers=[WeightedVerifier(get_verifier("integer"), 1.0)], splits=("train",))
        make = make_env("guess_number", task=task, tokenizer=tok, max_turns=8, options={"bonus": 2.0})
        (group,) = rollout_dialogues(Bisect(tok), make, [Example(id="0", question="", gold="37")],
                                     SamplingParams(n=2, max_new_tokens=4), max_turns=8, max_tokens=200,
                                     tokenizer=tok)
        d = group[0]
        assert d.turn_texts == ["50", "24", "37"] and d.turn_rewards == [0.0, 0.0, 2.0] and d.end == "done"
        assert d.turn_infos[-1]["status"] == "correct"
    finally:
        ENVS._table.pop("guess_number", None)
