"""Task.score sends model-based verifiers (reward models, PRMs: anything with `score_batch`) one batched request
per call instead of one pool call per response; a failing or hanging scorer yields `error` verdicts, never a hang."""
from __future__ import annotations

import time

from tasks.base import Example, Task, WeightedVerifier
from verifiers.base import Verdict, get_verifier


class CountingScorer:
    name = "fake_rm"

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.calls, self.delay, self.fail = [], delay, fail

    def __call__(self, response, ctx):          # the per-item path must not be used
        raise AssertionError("scored one item at a time")

    def score_batch(self, responses, contexts, timeout=None):
        self.calls.append((len(responses), timeout))
        if self.fail:
            raise RuntimeError("server gone")
        if self.delay > (timeout or 0):
            raise TimeoutError(f"no reply within {timeout} s")
        return [Verdict("correct" if len(r) > 3 else "wrong", float(len(r)), {}) for r in responses]


def _task(scorer) -> Task:
    return Task(name="t", loader=lambda s, n: [], verifiers=[WeightedVerifier(get_verifier("integer"), 1.0),
                                                              WeightedVerifier(scorer, 0.5)])


def test_one_batched_request_and_weighted_sum():
    scorer = CountingScorer()
    exs = [Example(str(i), "q", gold="7") for i in range(40)]
    scores = _task(scorer).score(["7"] * 20 + ["the answer is 8"] * 20, exs, timeout=2.0)
    assert scorer.calls == [(40, 2.0 * 3)]                    # one request; deadline 2 s x ceil(40 / 16)
    assert scores[0].reward == 1.0 + 0.5 * 1 and scores[-1].reward == 0.0 + 0.5 * 15
    assert scores[0].verdicts["fake_rm"].status == "wrong" and scores[-1].verdicts["integer"].status == "wrong"


def test_failing_or_slow_scorer_gives_error_verdicts():
    for scorer in (CountingScorer(fail=True), CountingScorer(delay=100.0)):
        t0 = time.time()
        scores = _task(scorer).score(["7", "8"], [Example("a", "q", "7"), Example("b", "q", "7")], timeout=1.0)
        assert time.time() - t0 < 30
        assert [s.verdicts["fake_rm"].status for s in scores] == ["error", "error"]
        assert [s.verdicts["integer"].status for s in scores] == ["correct", "wrong"]   # the rest still scored
