"""verifiers/reward_model.py: the in-process scorer, request coalescing in the scoring server, and the
`reward_model` verifier mixed with a rule-based verifier in a Task (workers ask one shared server)."""
from __future__ import annotations

import copy
import math
import queue
import threading

import pytest

from tests.reward_models.conftest import preference_rows
from verifiers.base import VerifyContext, get_verifier
from verifiers.reward_model import RewardModelScorer, ScoringServer, _batch_loop, _Request


def test_scorer_prefers_the_chosen_reply(trained_rm):
    _, out = trained_rm
    scorer = RewardModelScorer(str(out / "model"), batch_size=4)
    rows = preference_rows(30, seed=123)           # unseen prompts
    chosen = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = scorer.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    acc = sum(c > r for c, r in zip(chosen, rejected)) / len(rows)
    assert acc >= 0.9
    # batching and order do not change a score
    one = scorer.score([rows[3]["prompt"]], [rows[3]["chosen"]])[0]
    assert one == pytest.approx(chosen[3], abs=1e-5)


class _Recorder:
    def __init__(self):
        self.batches = []

    def score_items(self, items):
        self.batches.append(len(items))
        return [[float(len(r))] for _, r in items]


def test_batch_loop_coalesces_concurrent_requests():
    rec, requests = _Recorder(), queue.Queue()
    replies = [queue.Queue(1) for _ in range(5)]
    for i, reply in enumerate(replies):                      # queued before the loop starts: one forward
        requests.put(_Request([("p", "x" * i)] * (1 + i % 2), reply))
    threading.Thread(target=_batch_loop, args=(rec, requests, 4, 0.5), daemon=True).start()
    got = [r.get(timeout=10) for r in replies]
    assert got[0] == ("ok", [[0.0]]) and got[1] == ("ok", [[1.0], [1.0]]) and got[4] == ("ok", [[4.0]])
    assert rec.batches == [4, 3]       # 1+2+1 items reach batch_size 4 and close the first batch; 2+1 follow


def test_batch_loop_reports_scorer_errors_to_each_client():
    class Broken:
        def score_items(self, items):
            raise RuntimeError("cuda out of memory")

    requests, reply = queue.Queue(), queue.Queue(1)
    threading.Thread(target=_batch_loop, args=(Broken(), requests, 4, 0.0), daemon=True).start()
    requests.put(_Request([("p", "r")], reply))
    assert reply.get(timeout=10) == ("error", "RuntimeError: cuda out of memory")


def test_reward_model_verifier_in_a_task_with_a_rule_based_verifier(trained_rm):
    from tasks.base import Example, Task, WeightedVerifier

    _, out = trained_rm
    rm = get_verifier("reward_model", model=str(out / "model"))
    task = Task(name="polite", loader=lambda split, limit: [], verifiers=[
        WeightedVerifier(get_verifier("integer", pick="first"), 1.0), WeightedVerifier(rm, 0.25)])
    rows = preference_rows(4, seed=5)
    examples = [Example(str(i), r["prompt"], gold=r["chosen"].split(".")[0]) for i, r in enumerate(rows)]
    responses = [r["chosen"] for r in rows[:2]] + [r["rejected"] for r in rows[2:]]
    scores = task.score(responses, examples, timeout=60)
    raw = RewardModelScorer(str(out / "model")).score([r["prompt"] for r in rows], responses)
    for s, r in zip(scores, raw):
        v = s.verdicts["reward_model"]
        assert v.info["score"] == pytest.approx(r, abs=1e-4)
        assert v.reward == pytest.approx(1 / (1 + math.exp(-r)), abs=1e-4)
        assert s.reward == pytest.approx(s.verdicts["integer"].reward + 0.25 * v.reward, abs=1e-6)
        assert s.verdicts["integer"].status == "correct"
    assert [s.verdicts["reward_model"].status for s in scores] == ["correct", "correct", "wrong", "wrong"]
    direct = rm.score_batch(responses, [task.context(e) for e in examples])
    assert [d.info["score"] for d in direct] == pytest.approx(raw, abs=1e-4)
    # failures are verdicts, never exceptions
    lost = copy.copy(rm)
    lost.address = str(out / "no-such-socket")
    assert lost("3. thanks!", VerifyContext(prompt="q")).status == "error"
    with pytest.raises(ValueError, match="transform"):
        get_verifier("reward_model", model=str(out / "model"), transform="tanh")


def test_server_start_failure_is_one_line(tmp_path):
    with pytest.raises(RuntimeError, match=r"rm scoring server: model '.*nothing-here' is not a directory"):
        ScoringServer("rm", {"model": str(tmp_path / "nothing-here")}, start_timeout=120)
    with pytest.raises(KeyError, match="unknown scorer kind 'critic'"):
        ScoringServer("critic", {})
