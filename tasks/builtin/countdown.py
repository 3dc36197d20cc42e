"""`countdown`: reach a target with + - * / over 3-6 given numbers, scored by the `countdown` verifier.

    get_task("countdown", min_numbers=3, max_numbers=4, max_number=100, max_target=100, ops="+-*/",
             exactly_once=False, seed=0, n_train=10000, n_test=500)

Every puzzle is built from a random expression over all its numbers (a random binary tree, intermediate
values kept non-negative integers as in the game), so a solution exists, also when `exactly_once=True`.
Numbers and target travel in `Example.meta` (`numbers`, `target`; `solution` is the generating expression)
and reach the verifier through `VerifyContext.example`. Test puzzles are drawn first and train puzzles
skip any (sorted numbers, target) pair already drawn, so the splits are disjoint.
"""
from __future__ import annotations

import operator
import random
from functools import lru_cache

from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from tasks.registry import register_task
from verifiers.base import get_verifier

__all__ = ["Puzzle", "make_puzzle", "generate_puzzles", "countdown_task"]

Puzzle = tuple[tuple[int, ...], int, str]   # (numbers, target, a solution)
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}  # "/" only if exact
_MAX_TRIES = 10_000

TEMPLATE = PromptTemplate(
    user="{question}\nThink it through, then write only the final expression inside <answer></answer> tags, "
         "for example <answer>(1 + 2) * 3</answer>.",
)


def _random_expr(rng: random.Random, nums: list[int], ops: str) -> tuple[str, int] | None:
    """A random expression using every number in `nums` once, or None if it hit a non-integer/negative."""
    if len(nums) == 1:
        return str(nums[0]), nums[0]
    k = rng.randint(1, len(nums) - 1)
    left, right = _random_expr(rng, nums[:k], ops), _random_expr(rng, nums[k:], ops)
    if left is None or right is None:
        return None
    (ls, lv), (rs, rv), op = left, right, rng.choice(ops)
    if op == "-" and lv < rv:
        (ls, lv), (rs, rv) = (rs, rv), (ls, lv)
    if op == "/" and (rv == 0 or lv % rv):
        return None
    wrap = (lambda s: s if s.isdigit() else f"({s})")
    return f"{wrap(ls)} {op} {wrap(rs)}", _APPLY[op](lv, rv)


def make_puzzle(rng: random.Random, n_numbers: int, max_number: int, max_target: int, ops: str) -> Puzzle:
    """Draw numbers in [1, max_number] and an expression over them until its value is in [1, max_target]."""
    for _ in range(_MAX_TRIES):
        nums = [rng.randint(1, max_number) for _ in range(n_numbers)]
        expr = _random_expr(rng, nums, ops)
        if expr is not None and 1 <= expr[1] <= max_target:
            return tuple(nums), expr[1], expr[0]
    raise ValueError(f"bad options for task 'countdown': {_MAX_TRIES} random expressions over {n_numbers} "
                     f"numbers in 1..{max_number} with ops {ops!r} never landed in 1..{max_target}")


def generate_puzzles(*, min_numbers: int, max_numbers: int, max_number: int, max_target: int, ops: str,
                     seed: int, n_test: int, n_train: int) -> tuple[list[Puzzle], list[Puzzle]]:
    """(test, train), disjoint, deterministic in all arguments."""
    rng = random.Random(seed)
    seen: set[tuple[tuple[int, ...], int]] = set()
    out: list[Puzzle] = []
    attempts, total = 0, n_test + n_train
    while len(out) < total:
        attempts += 1
        if attempts > 100 * total + 1000:
            raise ValueError(f"bad options for task 'countdown': cannot draw {total} distinct puzzles with "
                             f"max_number={max_number}, max_target={max_target}")
        nums, target, sol = make_puzzle(rng, rng.randint(min_numbers, max_numbers), max_number, max_target, ops)
        key = (tuple(sorted(nums)), target)
        if key not in seen:
            seen.add(key)
            out.append((nums, target, sol))
    return out[:n_test], out[n_test:]


def _example(p: Puzzle, split: str, i: int, exactly_once: bool) -> Example:
    nums, target, sol = p
    rule = "exactly once" if exactly_once else "at most once"
    question = (f"Using the numbers {list(nums)}, create an expression that equals {target}. You may use "
                f"+, -, * and / and parentheses, and each number {rule}.")
    return Example(id=f"countdown/{split}/{i}", question=question, gold=str(target),
                   meta={"numbers": list(nums), "target": target, "solution": sol})


@register_task("countdown")
def countdown_task(min_numbers: int = 3, max_numbers: int = 4, max_number: int = 100, max_target: int = 100,
                   ops: str = "+-*/", exactly_once: bool = False, seed: int = 0, n_train: int = 10000,
                   n_test: int = 500) -> Task:
    """Countdown numbers game; every knob is a keyword option of `get_task("countdown", ...)`."""
    if not (3 <= min_numbers <= max_numbers <= 6) or max_number < 1 or max_target < 1 or \
            not ops or set(ops) - set("+-*/") or n_train < 0 or n_test < 0:
        raise ValueError("bad options for task 'countdown': need 3 <= min_numbers <= max_numbers <= 6, "
                         "max_number/max_target >= 1, sizes >= 0 and ops a subset of '+-*/'")
    knobs = dict(min_numbers=min_numbers, max_numbers=max_numbers, max_number=max_number,
                 max_target=max_target, ops=ops, seed=seed, n_test=n_test)

    @lru_cache(maxsize=4)
    def puzzles(n_train_needed: int) -> tuple[list[Puzzle], list[Puzzle]]:
        return generate_puzzles(**knobs, n_train=n_train_needed)

    def loader(split: str, limit: int | None) -> list[Example]:
        # Test items are drawn first, so the test split and any train prefix need no full generation.
        needed = 0 if split == "test" else min(n_train, n_train if limit is None else limit)
        test, train = puzzles(needed)
        chosen = test if split == "test" else train
        return [_example(p, split, i, exactly_once) for i, p in enumerate(chosen[:limit])]

    return Task(name="countdown", loader=loader, template=TEMPLATE,
                verifiers=[WeightedVerifier(get_verifier("countdown", exact=exactly_once), 1.0)],
                splits=("train", "test"), sizes={"train": n_train, "test": n_test},
                description=f"generated Countdown: {min_numbers}-{max_numbers} numbers in 1..{max_number}, "
                            f"target <= {max_target}, each number {'exactly' if exactly_once else 'at most'} "
                            "once")
