"""rlvr/bon.py and `rlvr bon`: best-of-N selectors against loop versions and rlvr.metrics, the scaling curve,
sample loading, and the command (from saved samples with a trained PRM, and end to end with sampling)."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from rlvr.bon import (ProblemSamples, accuracy_at, format_table, load_samples, parse_method, scaling_curve,
                      subsets)
from rlvr.cli import main
from rlvr.errors import DataError, RLVRError
from rlvr.metrics import maj_at_k_expected, pass_at_k


def _random_problem(rng: random.Random, n: int) -> ProblemSamples:
    answers = tuple(rng.choice([None, "1", "2", "3"]) for _ in range(n))
    gold = rng.choice(["1", "2"])
    correct = tuple(a == gold for a in answers)
    scores = {"prm": tuple(rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()]) for _ in range(n)),
              "rm": tuple(rng.random() for _ in range(n))}
    return ProblemSamples(correct, answers, scores)


def _loop_select(p: ProblemSamples, subset, method: str) -> float:
    """Plain-Python reference for every method on one subset (sample order kept)."""
    sel, scorer = parse_method(method)
    if sel == "best":
        best = max(subset, key=lambda i: (p.scores[scorer][i], -i))
        return float(p.correct[best])
    weight = (lambda i: 1.0) if sel == "majority" else (lambda i: p.scores[scorer][i])
    totals, first = {}, {}
    for pos, i in enumerate(subset):
        a = p.answers[i]
        if a is not None:
            totals[a] = totals.get(a, 0.0) + weight(i)
            first.setdefault(a, pos)
    if not totals:
        return 0.0
    top = max(totals.values())
    winner = min((a for a in totals if totals[a] >= top - 1e-12), key=lambda a: first[a])
    return float(any(p.correct[i] for i in subset if p.answers[i] == winner))


METHODS = ["majority", "rm", "prm", "weighted_rm", "weighted_prm"]


@pytest.mark.parametrize("seed", range(4))
def test_selectors_equal_loop_versions_over_all_subsets(seed):
    rng = random.Random(seed)
    problems = [_random_problem(rng, 6) for _ in range(8)]
    for N in (1, 2, 3, 6):
        got = accuracy_at(problems, N, METHODS, max_subsets=10_000)
        for m in METHODS:
            want = np.mean([np.mean([_loop_select(p, s, m) for s in itertools.combinations(range(6), N)])
                            for p in problems])
            assert got[m] == pytest.approx(want, abs=1e-12), (m, N)
        assert got["pass@N"] == pytest.approx(np.mean([pass_at_k(6, sum(p.correct), N) for p in problems]))


def test_majority_equals_rlvr_metrics_estimator():
    rng = random.Random(7)
    problems = [_random_problem(rng, 8) for _ in range(10)]
    for N in (1, 3, 8):
        want = np.mean([maj_at_k_expected(p.answers, p.correct, N, max_subsets=10_000) for p in problems])
        assert accuracy_at(problems, N, ["majority"], max_subsets=10_000)["majority"] == pytest.approx(want)


def test_oracle_scorer_reaches_pass_at_n_and_flat_weights_equal_majority():
    rng = random.Random(3)
    problems = []
    for _ in range(12):
        p = _random_problem(rng, 6)
        problems.append(ProblemSamples(p.correct, p.answers, {"prm": tuple(float(c) for c in p.correct),
                                                              "rm": (0.5,) * 6}))
    for N in (1, 2, 4):
        got = accuracy_at(problems, N, ["prm", "majority", "weighted_rm"], max_subsets=10_000)
        assert got["prm"] == pytest.approx(got["pass@N"])
        assert got["weighted_rm"] == pytest.approx(got["majority"])


def test_sampled_subsets_are_seeded_and_sorted():
    a = subsets(20, 5, 50, random.Random(1))
    assert a.shape == (50, 5) and (np.diff(a, axis=1) > 0).all()
    assert (a == subsets(20, 5, 50, random.Random(1))).all()
    assert subsets(5, 2, 50, random.Random(0)).shape == (10, 2)        # C(5,2)=10 <= 50: exact


def test_scaling_curve_table_and_errors():
    rng = random.Random(0)
    problems = [_random_problem(rng, 4) for _ in range(5)]
    curve = scaling_curve(problems, [1, 2, 4], ["majority", "prm"])
    assert curve["N"] == [1, 2, 4] and set(curve) == {"N", "pass@N", "majority", "prm"}
    assert curve["pass@N"] == sorted(curve["pass@N"])                  # the ceiling only grows with N
    assert format_table(curve).splitlines()[0].split() == ["N", "pass@N", "majority", "prm"]
    with pytest.raises(RLVRError, match="unknown rerank method 'best'"):
        parse_method("best")
    with pytest.raises(RLVRError, match="exceeds"):
        accuracy_at(problems, 5, ["majority"])
    with pytest.raises(RLVRError, match="needs rm scores"):
        accuracy_at([ProblemSamples((True,), ("1",))], 1, ["rm"])


def test_load_samples_groups_and_checks(tmp_path):
    f = tmp_path / "samples.jsonl"
    rows = [{"id": i, "sample": j, "response": "x", "status": "correct"} for i in ("a", "b") for j in (1, 0)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    groups = load_samples(f)
    assert [[r["sample"] for r in g] for g in groups] == [[0, 1], [0, 1]]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    with pytest.raises(DataError, match="problem 'b' has 1 samples, others 2"):
        load_samples(f)
    f.write_text(json.dumps({"id": "a", "status": "wrong"}) + "\n")
    with pytest.raises(DataError, match=r"samples.jsonl:1: missing field\(s\) response"):
        load_samples(f)


# -------------------------------------------------------------------------------------------------- command
def _chain_samples(path, n_problems=30, n=4, seed=0):
    """samples.jsonl whose "responses" are arithmetic chains (60% with a wrong step): correct iff no wrong step;
    each sample carries its own chain's question as the prompt; the answer is the last value."""
    from rlvr.trainers.prm import SyntheticConfig, synthetic_chains

    chains = synthetic_chains(SyntheticConfig(n=n_problems * n, max_value=5, errors="result", error_rate=0.6,
                                              min_steps=3, max_steps=3), seed + 99)
    rows = [{"id": f"p{k // n}", "sample": k % n, "prompt": ch.question, "response": "\n".join(ch.steps),
             "status": "wrong" if -1 in ch.labels else "correct", "answer": ch.steps[-1].split("=")[1]}
            for k, ch in enumerate(chains)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bon_command_with_a_trained_prm(trained_prm, tmp_path, capsys):
    _, prm_dir = trained_prm
    samples = _chain_samples(tmp_path / "samples.jsonl")
    out = tmp_path / "bon"
    code = main(["bon", "--samples", str(samples), "--rerank", "majority,prm,weighted_prm",
                 "--prm", str(prm_dir / "model"), "--prm-agg", "min", "--scaling", "1,2,4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "pass@N" in printed and "weighted_prm" in printed
    result = json.loads((out / "bon.json").read_text())
    curve = result["curve"]
    assert curve["N"] == [1, 2, 4] and result["num_problems"] == 30 and (out / "scaling.png").stat().st_size > 0
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 120 and all(0.0 <= s["scores"]["prm"] <= 1.0 for s in scores)
    print("\nPRM best-of-N on chains: " + ", ".join(f"{k}@4={v[-1]:.3f}" for k, v in curve.items() if k != "N"))
    # a PRM with step AUC >= 0.9 picks an error-free chain far more often than a random pick
    assert curve["prm"][-1] > curve["prm"][0] + 0.15 and curve["prm"][-1] <= curve["pass@N"][-1] + 1e-9


def test_bon_command_samples_then_reranks(tmp_path, capsys):
    out = tmp_path / "bon"
    code = main(["bon", "--task", "arithmetic", "-o", "digits=1", "-o", "answer_format=plain", "-o", "n_test=6", "-o", "n_train=10",
                 "--model", "tiny",
                 "--n", "2", "--limit", "3", "--max-new-tokens", "3", "--rerank", "majority", "--scaling", "1,2",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "samples.jsonl").exists() and (out / "metrics.json").exists() and (out / "bon.json").exists()
    assert json.loads((out / "bon.json").read_text())["curve"]["N"] == [1, 2]


@pytest.mark.parametrize("args,match", [
    (["--samples", "x.jsonl", "--rerank", "magic"], "unknown rerank method 'magic'"),
    (["--rerank", "majority"], "give --task"),
    (["--samples", "x.jsonl", "--scaling", "1,two"], "--scaling '1,two'"),
    (["--samples", "x.jsonl", "--prm-agg", "max"], "--prm-agg 'max'"),
])
def test_bon_command_errors_are_one_line(args, match, capsys):
    assert main(["bon", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
