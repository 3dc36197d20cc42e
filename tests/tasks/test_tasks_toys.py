"""Generated toys: determinism per seed, disjoint splits, sizes from knobs, and gold/solutions that verify."""
from __future__ import annotations

import operator

import pytest

from tasks import get_task
from tasks.builtin.arithmetic import generate_problems
from verifiers.base import get_verifier

SMALL = dict(n_train=300, n_test=50)


def _signature(task):
    return [(e.id, e.question, e.gold, e.meta) for split in ("train", "test") for e in task.load(split)]


@pytest.mark.parametrize("name, knobs", [("arithmetic", dict(digits=2, ops="+-*")),
                                         ("countdown", dict(min_numbers=3, max_numbers=6))])
def test_deterministic_per_seed(name, knobs):
    a = get_task(name, seed=1, **knobs, **SMALL)
    b = get_task(name, seed=1, **knobs, **SMALL)
    c = get_task(name, seed=2, **knobs, **SMALL)
    assert _signature(a) == _signature(b)
    assert _signature(a) != _signature(c)
    fresh = get_task(name, seed=1, **knobs, **SMALL)      # a prefix or the test split alone: same items
    assert fresh.load("train", limit=7) == a.load("train")[:7]
    assert get_task(name, seed=1, **knobs, **SMALL).load("test") == a.load("test")


def test_arithmetic_splits_disjoint_up_to_commutativity_and_test_independent_of_n_train():
    test, train = generate_problems(digits=1, ops="+*", seed=0, n_test=30, n_train=80)
    canon = lambda p: (min(p[0], p[2]), p[1], max(p[0], p[2]))  # noqa: E731
    keys = [canon(p) for p in test + train]
    assert len(set(keys)) == len(keys) == 110   # all of them: 2 ops x 55
    assert generate_problems(1, "+*", 0, 30, 10)[0] == test


def test_arithmetic_capacity_and_bad_knobs_raise():
    # digits=1, one op: 10*11/2 = 55 distinct problems
    assert len(get_task("arithmetic", digits=1, n_train=50, n_test=5).load("train")) == 50
    assert get_task("arithmetic", digits=1, n_test=5).sizes == {"train": 50, "test": 5}   # default: what is left
    assert get_task("arithmetic", digits=3).sizes == {"train": 10000, "test": 500}
    with pytest.raises(ValueError, match="has only 55 distinct problems"):
        get_task("arithmetic", digits=1, n_train=51, n_test=5)
    with pytest.raises(ValueError, match="bad options for task 'arithmetic'"):
        get_task("arithmetic", ops="+/")
    with pytest.raises(ValueError, match="answer_format"):
        get_task("arithmetic", answer_format="latex")


def test_arithmetic_golds_operands_and_digits():
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    task = get_task("arithmetic", digits=4, ops="+-*", **SMALL)
    for e in task.load("train") + task.load("test"):
        a, op, b = e.meta["a"], e.meta["op"], e.meta["b"]
        assert e.question == f"{a} {op} {b}" and int(e.gold) == ops[op](a, b) >= 0
        assert 1000 <= a <= 9999 and 1000 <= b <= 9999


def test_sizes_come_from_knobs_without_generating():
    task = get_task("countdown", n_train=123456, n_test=7)
    assert (task.size("train"), task.size("test")) == (123456, 7)
    assert task._cache == {}             # nothing was generated


@pytest.mark.parametrize("fmt, written", [("tags", "<answer>{}</answer>"), ("plain", " {} and then 12")])
@pytest.mark.parametrize("reverse", [False, True])
def test_arithmetic_reference_answers_verify(fmt, written, reverse):
    task = get_task("arithmetic", digits=3, ops="+*", reverse_answer=reverse, answer_format=fmt, **SMALL)
    verifier = task.verifiers[0].verifier
    for e in task.load("test"):
        assert e.meta["written_answer"] == (e.gold[::-1] if reverse else e.gold)
        verdict = verifier(written.format(e.meta["written_answer"]), task.context(e))
        assert verdict.status == "correct", (e, verdict)
    rendered = task.render(task.load("test")[0])
    assert ("reverse order" in rendered) == (reverse and fmt == "tags")
    assert rendered.endswith("=") if fmt == "plain" else "<answer></answer>" in rendered


def test_countdown_puzzles_are_solvable_with_every_number_exactly_once():
    task = get_task("countdown", min_numbers=3, max_numbers=6, exactly_once=True, **SMALL)
    exact = get_verifier("countdown", exact=True)
    sizes = set()
    for e in task.load("train") + task.load("test"):
        nums, target = e.meta["numbers"], e.meta["target"]
        sizes.add(len(nums))
        assert e.gold == str(target) and 1 <= target <= 100 and all(1 <= n <= 100 for n in nums)
        assert exact(f"<answer>{e.meta['solution']}</answer>", task.context(e)).status == "correct"
        assert str(nums) in e.question and "exactly once" in e.question
    assert sizes == {3, 4, 5, 6}


def test_countdown_splits_disjoint():
    task = get_task("countdown", **SMALL)
    key = lambda e: (tuple(sorted(e.meta["numbers"])), e.meta["target"])  # noqa: E731
    train, test = {key(e) for e in task.load("train")}, {key(e) for e in task.load("test")}
    assert len(train) == 300 and len(test) == 50 and not train & test


def test_countdown_bad_knobs():
    with pytest.raises(ValueError, match="bad options for task 'countdown'"):
        get_task("countdown", max_numbers=7)
    with pytest.raises(ValueError, match="never landed"):
        get_task("countdown", ops="*", max_target=1, **SMALL).load("test")


def test_score_through_the_verifier_pool():
    """End to end: Task.score ships the verifiers and the meta (numbers/target) to worker processes."""
    cd = get_task("countdown", **SMALL)
    ex = cd.load("test")[:2]
    good, bad = f"<answer>{ex[0].meta['solution']}</answer>", "<answer>1 + 1</answer>"
    scores = cd.score([good, bad], ex, timeout=30)
    assert [s.status for s in scores] == ["correct", "wrong"] and [s.reward for s in scores] == [1.0, 0.0]
    ar = get_task("arithmetic", **SMALL)
    [s] = ar.score([f"<answer>{ar.load('test')[0].gold}</answer>"], ar.load("test")[:1], timeout=30)
    assert s.correct and s.answer == ar.load("test")[0].gold
