"""`rlvr.eval.evaluate` and `rlvr eval` end to end on the tiny model with a throwaway task and verifier.

The toy verifier's answer is the first character of the response; it is correct when that character is in the
gold string. Two special golds make the verifier raise (`error`) or hang past the deadline (`timeout`).
"""
from __future__ import annotations

import json

import pytest
import torch

from rlvr.metrics import maj_at_k, pass_at_k, pass_hat_k
from rlvr.models.tiny import build_tiny_model
from rlvr.rollout import SamplingParams, get_engine
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from tasks.registry import get_task, register_task
from tests.rlvr.toy_verifier import FirstCharVerifier

TASK_NAME = "test-eval-first-char"
GOLDS = ["0123456789abcdefghijklm", "nopqrstuvwxyz", "aeiou", "()+-*/=", "__raise__", "__slow__"]


def _load(split: str, limit: int | None) -> list[Example]:
    return [Example(id=f"toy/{i}", question=f"{i}+{i}=", gold=g) for i, g in enumerate(GOLDS)]


def _toy_task() -> Task:
    return Task(name=TASK_NAME, loader=_load, verifiers=[WeightedVerifier(FirstCharVerifier())],
                template=PromptTemplate(plain="{user}"), description="eval test toy")


register_task(TASK_NAME, source="test")(_toy_task)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The tiny model gains nothing from intra-op threads, and on a shared CPU OpenMP barriers stall for whole
    # scheduler slices (measured 20x slower), so these tests run single-threaded; the setting is restored.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    pytest.importorskip("pebble")
    try:
        import verifiers.pool  # noqa: F401
    except ImportError as e:
        pytest.skip(f"verifier pool not available: {e}")
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return get_engine("hf", model=str(tiny_dir))


def _read_samples(out_dir):
    return [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]


def test_evaluate_writes_consistent_metrics(engine, tmp_path):
    n, ks = 4, [1, 2, 4]
    metrics = evaluate_toy(engine, tmp_path, n=n, ks=ks, limit=None)
    assert json.loads((tmp_path / "metrics.json").read_text())["pass@1"] == metrics["pass@1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]        # no temp files left
    samples = _read_samples(tmp_path)
    assert len(samples) == len(GOLDS) * n and metrics["num_samples"] == len(samples)
    by_problem: dict[str, list[dict]] = {}
    for s in samples:
        by_problem.setdefault(s["id"], []).append(s)
    assert [len(v) for v in by_problem.values()] == [n] * len(GOLDS)
    # Recompute every metric from the per-sample records.
    for k in ks:
        pk = [pass_at_k(n, sum(s["status"] == "correct" for s in v), k) for v in by_problem.values()]
        hk = [pass_hat_k(n, sum(s["status"] == "correct" for s in v), k) for v in by_problem.values()]
        mk = [maj_at_k([s["answer"] for s in v], [s["status"] == "correct" for s in v], k)
              for v in by_problem.values()]
        assert metrics[f"pass@{k}"]["value"] == pytest.approx(sum(pk) / len(pk))
        assert metrics[f"pass^{k}"]["value"] == pytest.approx(sum(hk) / len(hk))
        assert metrics[f"maj@{k}"]["value"] == pytest.approx(sum(mk) / len(mk))
    outcomes = metrics["outcomes"]
    assert sum(outcomes.values()) == len(samples)
    assert outcomes["error"] == n and outcomes["timeout"] == n          # the two special problems
    assert {s["status"] for s in by_problem["toy/5"]} == {"timeout"}
    assert metrics["mean_response_tokens"] == pytest.approx(sum(s["num_tokens"] for s in samples) / len(samples))
    assert metrics["truncated_frac"] == pytest.approx(
        sum(s["finish_reason"] == "length" for s in samples) / len(samples))
    for s in samples:                                   # the verifier saw exactly the engine's text
        first = s["response"][:1]
        if s["status"] in ("correct", "wrong"):
            assert s["answer"] == first and (first in s["gold"]) == (s["status"] == "correct")


def evaluate_toy(engine, out_dir, **kw):
    from rlvr.eval import evaluate

    return evaluate(TASK_NAME, engine, temperature=1.0, max_new_tokens=6, out_dir=out_dir, timeout=0.5,
                    seed=0, progress=False, **kw)


def test_evaluate_is_seeded(engine, tmp_path):
    a = evaluate_toy(engine, tmp_path / "a", n=2, ks=[1, 2], limit=4)
    b = evaluate_toy(engine, tmp_path / "b", n=2, ks=[1, 2], limit=4)
    assert _read_samples(tmp_path / "a") == _read_samples(tmp_path / "b")
    assert a["pass@2"] == b["pass@2"] and a["num_problems"] == 4


def test_evaluate_rejects_k_above_n(engine, tmp_path):
    from rlvr.errors import RLVRError
    from rlvr.eval import evaluate

    with pytest.raises(RLVRError, match="k=8"):
        evaluate(TASK_NAME, engine, n=4, ks=[1, 8], out_dir=tmp_path)


def test_greedy_pass_at_1_matches_direct_check(engine):
    from rlvr.eval import greedy_pass_at_1

    task = get_task(TASK_NAME)
    examples = task.load("test", 4)
    value = greedy_pass_at_1(task, engine, limit=4, max_new_tokens=6, timeout=0.5)
    greedy = engine.generate([task.render(ex, engine.tokenizer) for ex in examples],
                             SamplingParams(max_new_tokens=6, temperature=0.0))
    expected = [g[0].text[:1] != "" and g[0].text[:1] in ex.gold for g, ex in zip(greedy, examples)]
    assert value == pytest.approx(sum(expected) / len(expected))


def test_cli_eval(tiny_dir, tmp_path, capsys):
    from rlvr.cli import main

    out = tmp_path / "run"
    rc = main(["eval", "--task", TASK_NAME, "--model", str(tiny_dir), "--n", "4", "--k", "1,4", "--limit", "3",
               "--max-new-tokens", "5", "--out", str(out), "--timeout", "0.5"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "pass@4" in printed and str(out / "metrics.json") in printed.replace("\n", "")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_problems"] == 3 and metrics["n"] == 4 and metrics["ks"] == [1, 4]


def test_cli_bad_k_is_one_line(tmp_path, capsys):
    from rlvr.cli import main

    rc = main(["eval", "--task", TASK_NAME, "--n", "4", "--k", "1,8", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "k=8" in err and "--n 4" in err
