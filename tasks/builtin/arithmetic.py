"""`arithmetic`: generated n-digit addition / subtraction / multiplication, scored by the `integer` verifier.

    get_task("arithmetic", digits=3, ops="+-*", seed=0, n_train=None, n_test=500,
             reverse_answer=False, answer_format="tags")

`n_train=None` means 10,000, or all remaining problems when fewer exist (digits <= 2); an explicit
`n_train` larger than what exists is an error.

Both operands have exactly `digits` digits (0-9 for digits=1). Subtraction puts the larger operand first, so
answers are never negative. Problems are deduplicated up to commutativity (a+b == b+a), and the test set is
drawn first, so train and test are disjoint and the test set does not depend on `n_train`.

`reverse_answer`: the answer is written least-significant digit first ("975" for 579). The model then emits
digits in the order carries propagate, which makes addition learnable for tiny models (Lee et al. 2023,
"Teaching Arithmetic to Small Transformers"). The gold stays the plain number; the verifier reverses.

`answer_format` (a key of ANSWER_FORMATS): "tags" asks for `<answer>N</answer>` through the chat template;
"plain" is completion style (`"123 + 456 ="`, the first integer of the response is the answer).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from tasks.registry import register_task
from verifiers.base import get_verifier

__all__ = ["ANSWER_FORMATS", "AnswerFormat", "generate_problems", "arithmetic_task"]

_OPS: dict[str, Callable[[int, int], int]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b,
                                              "*": lambda a, b: a * b}
_COMMUTATIVE = {"+", "*"}
_REVERSE_HINT = "Write the digits of the answer in reverse order (least significant digit first). "


@dataclass(frozen=True)
class AnswerFormat:
    user: str            # user message; `{hint}` is replaced by the reversal hint (or nothing)
    plain: str           # layout without a chat template
    chat: bool
    pick: str            # integer verifier: which integer of the response is the answer


ANSWER_FORMATS: dict[str, AnswerFormat] = {
    "tags": AnswerFormat("What is {question}? {hint}Give only the final answer inside <answer></answer> tags.",
                         "{system}{user}\n", True, "last"),
    "plain": AnswerFormat("{question} =", "{user}", False, "first"),
}

Problem = tuple[int, str, int]   # (a, op, b)


def _key(p: Problem) -> Problem:
    a, op, b = p
    return (min(a, b), op, max(a, b)) if op in _COMMUTATIVE else p


def _capacity(digits: int, ops: str) -> int:
    """Distinct problems up to commutativity: n(n+1)/2 unordered pairs per op (for '-': a >= b)."""
    n = 10 if digits == 1 else 9 * 10 ** (digits - 1)
    return len(ops) * n * (n + 1) // 2


def _check(digits: int, ops: str, n_test: int, n_train: int) -> None:
    """Knob validation, so a bad option fails when the task is built rather than at first load."""
    total = n_test + n_train
    if digits < 1 or not ops or set(ops) - set(_OPS) or len(set(ops)) != len(ops) or min(n_test, n_train) < 0:
        raise ValueError(f"bad options for task 'arithmetic': need digits >= 1, sizes >= 0 and ops a subset "
                         f"of {''.join(_OPS)!r} (got digits={digits}, ops={ops!r})")
    if total > _capacity(digits, ops):
        raise ValueError(f"bad options for task 'arithmetic': digits={digits} ops={ops!r} has only "
                         f"{_capacity(digits, ops)} distinct problems, n_train + n_test = {total}")


def generate_problems(digits: int, ops: str, seed: int, n_test: int, n_train: int
                      ) -> tuple[list[Problem], list[Problem]]:
    """(test, train), disjoint and without duplicates; deterministic in all arguments."""
    _check(digits, ops, n_test, n_train)
    total = n_test + n_train
    rng = random.Random(seed)
    lo, hi = (0, 9) if digits == 1 else (10 ** (digits - 1), 10 ** digits - 1)
    seen: set[Problem] = set()
    out: list[Problem] = []
    while len(out) < total:     # rejection sampling; total <= capacity, so it ends (slowly only near it)
        a, op, b = rng.randint(lo, hi), rng.choice(ops), rng.randint(lo, hi)
        if op == "-" and a < b:
            a, b = b, a
        if _key((a, op, b)) not in seen:
            seen.add(_key((a, op, b)))
            out.append((a, op, b))
    return out[:n_test], out[n_test:]


def _example(p: Problem, split: str, i: int, reverse: bool) -> Example:
    a, op, b = p
    answer = str(_OPS[op](a, b))
    written = answer[::-1] if reverse else answer
    return Example(id=f"arithmetic/{split}/{i}", question=f"{a} {op} {b}", gold=answer,
                   meta={"a": a, "op": op, "b": b, "written_answer": written})


@register_task("arithmetic")
def arithmetic_task(digits: int = 3, ops: str = "+", seed: int = 0, n_train: int | None = None,
                    n_test: int = 500, reverse_answer: bool = False, answer_format: str = "tags") -> Task:
    """n-digit arithmetic; every knob is a keyword option of `get_task("arithmetic", ...)`."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"bad options for task 'arithmetic': answer_format {answer_format!r} is not one of "
                         f"{', '.join(ANSWER_FORMATS)}")
    fmt = ANSWER_FORMATS[answer_format]
    _check(digits, ops, n_test, 0)
    if n_train is None:
        n_train = min(10000, _capacity(digits, ops) - n_test)
    _check(digits, ops, n_test, n_train)

    @lru_cache(maxsize=4)
    def problems(n_train_needed: int) -> tuple[list[Problem], list[Problem]]:
        return generate_problems(digits, ops, seed, n_test, n_train_needed)

    def loader(split: str, limit: int | None) -> list[Example]:
        # Test items are drawn first, so the test split and any train prefix need no full generation.
        needed = 0 if split == "test" else min(n_train, n_train if limit is None else limit)
        test, train = problems(needed)
        chosen = test if split == "test" else train
        return [_example(p, split, i, reverse_answer) for i, p in enumerate(chosen[:limit])]

    user = fmt.user.replace("{hint}", _REVERSE_HINT if reverse_answer else "")
    template = PromptTemplate(user=user, plain=fmt.plain, chat=fmt.chat)
    verifier = get_verifier("integer", pick=fmt.pick, reverse=reverse_answer)
    reversed_note = ", answers reversed" if reverse_answer else ""
    return Task(name="arithmetic", loader=loader, verifiers=[WeightedVerifier(verifier, 1.0)], template=template,
                splits=("train", "test"), sizes={"train": n_train, "test": n_test},
                description=f"generated {digits}-digit arithmetic, ops {ops!r}{reversed_note}")
