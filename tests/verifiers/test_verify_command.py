"""`rlvr verify`: one JSON line per response, id lookup, and one-line errors naming file:line.

Uses a small task registered here (math x1 + format_partial x0.5) so it does not depend on the data files.
"""
from __future__ import annotations

import json

import pytest

from rlvr.cli import main
from tasks import registry
from tasks.base import Example, Task, WeightedVerifier
from verifiers.base import get_verifier

NAME = "verify_cmd_test"


def _task() -> Task:
    examples = [Example(id=f"{NAME}/1", question="1/2?", gold=r"\frac{1}{2}"),
                Example(id=f"{NAME}/2", question="9*2?", gold="18")]
    return Task(name=NAME, loader=lambda split, limit: examples,
                verifiers=[WeightedVerifier(get_verifier("math"), 1.0),
                           WeightedVerifier(get_verifier("format_partial"), 0.5)])


@pytest.fixture(autouse=True)
def test_task():
    if NAME not in registry._FACTORIES:
        registry.register_task(NAME, source="test")(_task)
    yield
    registry._FACTORIES.pop(NAME, None)
    registry._BUILT.pop(NAME, None)


def _run(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["verify", "--task", NAME, *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_single_response(capsys):
    code, lines, _ = _run(capsys, "--response", r"<think>hm</think><answer>\boxed{0.5}</answer>",
                          "--gold", r"\frac12")
    assert code == 0 and len(lines) == 1
    out = lines[0]
    assert out["status"] == "correct" and out["answer"] == "1/2"
    assert out["reward"] == pytest.approx(1.0 + 0.5 * 1.0)
    assert out["verdicts"]["math"]["status"] == "correct"
    assert out["verdicts"]["format_partial"]["reward"] == 1.0


def test_file_with_gold_and_ids(tmp_path, capsys):
    path = tmp_path / "completions.jsonl"
    records = [{"response": "#### 18", "id": f"{NAME}/2"},
               {"response": r"\boxed{3}", "id": "1"},                    # task prefix may be left out
               {"response": "The answer is 7.", "gold": "7", "num_tokens": 5},
               {"response": "no idea", "gold": 7}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    code, lines, _ = _run(capsys, "--file", str(path))
    assert code == 0
    assert [o["line"] for o in lines] == [1, 2, 3, 4]
    assert [o["status"] for o in lines] == ["correct", "wrong", "correct", "unparseable"]
    assert [o["id"] for o in lines] == [f"{NAME}/2", f"{NAME}/1", None, None]
    assert [o["reward"] for o in lines] == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("content, message", [
    ('{"response": "1", "gold": "1"}\n{oops\n', ":2: invalid JSON"),
    ('{"response": "1"}\n', ":1: needs 'gold' or 'id'"),
    ('[1, 2]\n', ":1: expected a JSON object"),
    ('{"response": 5, "gold": "1"}\n', ":1: 'response' must be a string"),
    ('{"response": "1", "gold": "1", "extra": 1}\n', ":1: unknown key"),
    ('{"response": "1", "gold": "1"}\n{"response": "1", "id": "nope"}\n', ":2: id 'nope' not found"),
])
def test_malformed_file_is_one_error_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    code, lines, err = _run(capsys, "--file", str(path))
    assert code == 2 and lines == []
    assert len(err.strip().splitlines()) == 1
    assert f"{path}{message}" in err


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    code, _, err = _run(capsys, "--response", "42")
    assert code == 2 and "--gold" in err
    code, _, err = _run(capsys, "--response", "42", "--gold", "42", "--timeout", "0")
    assert code == 2 and "--timeout" in err
    code, _, err = _run(capsys, "--file", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl: no such file" in err
