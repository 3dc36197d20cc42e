"""The `math` verifier on real data (shared/data; skipped when absent).

- MATH-500: every reference solution must verify against its own `answer` field (>= 99% required).
- GSM8K test: every reference solution verifies against the number after its `####` (100%), and no solution
  verifies against another problem's answer (a shuffled pairing, numerically equal golds skipped).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from verifiers.math import check_batch


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_math500_reference_solutions_verify(shared_data):
    rows = _read_jsonl(shared_data / "prm800k_math_splits" / "test.jsonl")
    assert len(rows) == 500
    verdicts = check_batch([(r["solution"], r["answer"]) for r in rows], timeout=10)
    disagree = [(r["unique_id"], r["answer"], v.status, v.info.get("answer")) for r, v in zip(rows, verdicts)
                if v.status != "correct"]
    agreement = 1 - len(disagree) / len(rows)
    print(f"MATH-500 agreement {agreement:.1%}; disagreeing: {disagree}")
    assert agreement >= 0.99, disagree


def _gsm8k_gold(answer_text: str) -> str:
    return answer_text.rsplit("####", 1)[1].strip().replace(",", "")


def test_gsm8k_reference_solutions_verify(shared_data):
    rows = _read_jsonl(shared_data / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    golds = [_gsm8k_gold(r["answer"]) for r in rows]
    verdicts = check_batch([(r["answer"], g) for r, g in zip(rows, golds)], timeout=10)
    failed = [(i, g, v) for i, (g, v) in enumerate(zip(golds, verdicts)) if v.status != "correct"]
    assert not failed


def test_gsm8k_shuffled_pairs_have_no_false_positives(shared_data):
    rows = _read_jsonl(shared_data / "gsm8k" / "test.jsonl")
    golds = [_gsm8k_gold(r["answer"]) for r in rows]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    pairs = [(rows[i]["answer"], golds[j]) for i, j in zip(range(len(rows)), order)
             if float(golds[i]) != float(golds[j])]
    assert len(pairs) >= 500
    verdicts = check_batch(pairs, timeout=10)
    false_positives = [(p[1], v.info) for p, v in zip(pairs, verdicts) if v.status == "correct"]
    assert not false_positives
    assert all(v.status == "wrong" for v in verdicts)


def test_math500_shuffled_pairs_have_no_false_positives(shared_data):
    from verifiers.math import normalize_text

    rows = _read_jsonl(shared_data / "prm800k_math_splits" / "test.jsonl")
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    pairs = [(rows[i]["solution"], rows[j]["answer"]) for i, j in zip(range(len(rows)), order)
             if normalize_text(rows[i]["answer"]) != normalize_text(rows[j]["answer"])]
    assert len(pairs) >= 450
    verdicts = check_batch(pairs, timeout=10)
    false_positives = [(p[1], v.info) for p, v in zip(pairs, verdicts) if v.status == "correct"]
    assert not false_positives
