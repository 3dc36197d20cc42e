"""Built-in maths sets: sizes, gold answers, meta, and agreement of the vendored copies with the shared data."""
from __future__ import annotations

import gzip
import json
import re

import pytest

from tasks import get_task, list_tasks
from tasks.builtin.math_sets import MATH_TEMPLATE

SIZES = {("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319, ("math500", "test"): 500,
         ("math12k", "train"): 11998,   # 12,000 records, 2 with an empty answer are skipped
         ("aime24", "test"): 30, ("amc23", "test"): 40, ("minerva_math", "test"): 272,
         ("olympiadbench", "test"): 675}


@pytest.mark.parametrize("name, split", list(SIZES))
def test_size_ids_and_verifier(name, split):
    task = get_task(name)
    examples = task.load(split)
    assert len(examples) == task.size(split) == SIZES[name, split]
    assert len({e.id for e in examples}) == len(examples)
    assert all(e.question.strip() and e.gold for e in examples)
    assert [w.name for w in task.verifiers] == ["math"] and task.primary == "math"
    assert task.template == MATH_TEMPLATE and task.description


def test_math_template_asks_for_boxed_answer():
    ex = get_task("math500").load("test")[0]
    text = get_task("math500").render(ex)
    assert "\\boxed{}" in text and "step by step" in text and ex.question in text


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gsm8k_gold_is_number_after_hashes_and_solution_kept(shared_data):
    raw = _read(shared_data / "gsm8k" / "test.jsonl")
    examples = get_task("gsm8k").load("test")
    assert [e.question for e in examples] == [r["question"] for r in raw]
    assert [e.meta["solution"] for e in examples] == [r["answer"] for r in raw]
    assert all(re.fullmatch(r"-?\d+", e.gold) for e in examples)
    assert examples[0].gold == "18"


def test_math500_meta_and_answers_match_upstream(shared_data):
    raw = _read(shared_data / "prm800k_math_splits" / "test.jsonl")
    examples = get_task("math500").load("test")
    assert [(e.question, e.gold) for e in examples] == [(r["problem"], r["answer"]) for r in raw]
    assert examples[0].meta == {k: raw[0][k] for k in ("subject", "level", "unique_id")}
    assert examples[0].id == f"math500/{raw[0]['unique_id']}"


def test_math12k_matches_upstream_except_empty_answers(shared_data):
    raw = _read(shared_data / "prm800k_math_splits" / "train_problem_answer_only.jsonl")
    assert len(raw) == 12000
    kept = [(r["problem"], r["answer"]) for r in raw if r["answer"].strip()]
    assert [(e.question, e.gold) for e in get_task("math12k").load("train")] == kept


def test_aime_amc_minerva_olympiad_golds(shared_data):
    q = shared_data / "qwen25_math_eval"
    aime = _read(q / "aime24" / "test.jsonl")
    assert [e.gold for e in get_task("aime24").load("test")] == [r["answer"] for r in aime]
    amc = get_task("amc23").load("test")
    assert [e.gold for e in amc] == [str(int(r["answer"])) for r in _read(q / "amc23" / "test.jsonl")]
    assert amc[0].gold == "27"                                   # 27.0 upstream
    minerva = get_task("minerva_math").load("test")
    assert minerva[0].gold == "1.6" and all("\\boxed" not in e.gold for e in minerva)
    oly_raw = _read(q / "olympiadbench" / "test.jsonl")
    oly = get_task("olympiadbench").load("test")
    assert [e.gold for e in oly] == [", ".join(r["final_answer"]) for r in oly_raw]
    multi = [e for e in oly if e.meta["is_multiple_answer"]]
    assert len(multi) == 94 and all("unit" in e.meta for e in oly)


def test_every_required_task_is_registered():
    names = set(list_tasks())
    assert {"gsm8k", "math500", "math12k", "aime24", "amc23", "minerva_math", "olympiadbench",
            "arithmetic", "countdown", "gsm8k_int"} <= names


def test_vendored_files_rebuild_identically(shared_data, tmp_path):
    """The vendored files are exactly what make_vendored.py builds from the shared data (no hand edits)."""
    import importlib.util

    from tasks.data import VENDORED_DIR

    # tasks/data/ is a data folder next to the tasks.data module, so load the script by path.
    spec = importlib.util.spec_from_file_location("make_vendored", VENDORED_DIR / "make_vendored.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    built = script.vendor(shared_data, tmp_path)
    assert sorted(built) == sorted(p.name for p in VENDORED_DIR.glob("*.jsonl.gz"))
    for name in built:   # compare content: compressed bytes may differ between zlib builds
        assert gzip.decompress((tmp_path / name).read_bytes()) == gzip.decompress((VENDORED_DIR / name).read_bytes())


def test_unknown_task_lists_known_names():
    from tasks.registry import UnknownTaskError

    with pytest.raises(UnknownTaskError, match=r"unknown task 'gsm9k'; known: .*gsm8k"):
        get_task("gsm9k")
