"""PRM training data: solution paths with per-step ratings, read from JSONL (native `steps`, PRM800K records and
the stepwise layout; rlvr.trainers.prm's module doc describes the formats), or generated (synthetic arithmetic
chains), and split by problem for a held-out set."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

from rlvr.config import Config
from rlvr.errors import DataError
from rlvr.trainers.reward_model import read_jsonl_any

__all__ = ["Rating", "SyntheticConfig", "StepExample", "RatedStep", "STEP_FORMATS", "read_step_data",
           "synthetic_chains", "trajectories_from_rated", "split_by_problem"]

Rating = int | None


class SyntheticConfig(Config):
    """Arithmetic chains `a+b=c` (one per line) with injected wrong results (see `synthetic_chains`)."""

    n: int = 4000
    """chains generated (problems)"""
    min_steps: int = 2
    """fewest steps per chain"""
    max_steps: int = 5
    """most steps per chain"""
    max_value: int = 9
    """every intermediate value stays in 0..max_value"""
    error_rate: float = 0.5
    """share of chains with one wrong step (the chain stops there, as PRM800K labelling does)"""
    errors: Literal["result", "operand", "both"] = "both"
    """wrong result (3+4=8), wrong operand (the step does not start from the previous result), or either"""


@dataclass(frozen=True)
class StepExample:
    """One solution path: its steps and a rating per step (1 good, 0 neutral, -1 bad, None unrated)."""

    question: str
    steps: tuple[str, ...]
    labels: tuple[Rating, ...]
    problem: str = ""            # groups trajectories for the held-out split; "" = the question itself


@dataclass(frozen=True)
class RatedStep:
    question: str
    prefix: tuple[str, ...]
    step: str
    rating: Rating


# ------------------------------------------------------------------------------------------------------ data
def _rating(value: Any, where: str) -> Rating:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value in (-1, 0, 1)):
        return value
    raise DataError(f"{where}: rating must be 1, 0, -1 or null, got {value!r}")


def _native(rec: dict, where: str) -> StepExample:
    steps, labels = rec.get("steps"), rec.get("labels")
    if not (isinstance(steps, list) and all(isinstance(s, str) for s in steps)):
        raise DataError(f"{where}: field 'steps' must be a list of strings")
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise DataError(f"{where}: field 'labels' must be a list as long as 'steps' ({len(steps)})")
    if not isinstance(rec.get("question"), str):
        raise DataError(f"{where}: field 'question' must be a string")
    return StepExample(rec["question"], tuple(steps), tuple(_rating(v, where) for v in labels))


def _prm800k(rec: dict, where: str) -> Iterable[RatedStep]:
    try:
        question, steps = rec["question"]["problem"], rec["label"]["steps"]
    except (KeyError, TypeError):
        raise DataError(f"{where}: a PRM800K record needs question.problem and label.steps") from None
    prefix: tuple[str, ...] = ()
    for step in steps:
        completions = step.get("completions") or []
        for c in completions:
            yield RatedStep(question, prefix, c["text"], _rating(c.get("rating"), where))
        human = step.get("human_completion")
        if human:
            yield RatedStep(question, prefix, human["text"], _rating(human.get("rating"), where))
        chosen = step.get("chosen_completion")
        if chosen is not None and 0 <= chosen < len(completions):
            prefix = prefix + (completions[chosen]["text"],)
        elif human:
            prefix = prefix + (human["text"],)
        else:
            break


def _stepwise(rec: dict, where: str) -> Iterable[RatedStep]:
    prev = rec.get("responses") or []
    if not isinstance(rec.get("instruction"), str) or not isinstance(rec.get("next_response"), str):
        raise DataError(f"{where}: a stepwise record needs string fields 'instruction' and 'next_response'")
    yield RatedStep(rec["instruction"], tuple(prev), rec["next_response"], _rating(rec.get("rating"), where))


# name -> (how to recognise a record, how to read it). `steps` gives StepExamples; the others give RatedSteps.
STEP_FORMATS: dict[str, tuple[Callable[[dict], bool], Callable[[dict, str], Any]]] = {
    "steps": (lambda r: "steps" in r and "labels" in r, _native),
    "prm800k": (lambda r: "label" in r and "question" in r, _prm800k),
    "stepwise": (lambda r: "next_response" in r, _stepwise),
}


def trajectories_from_rated(rated: Iterable[RatedStep]) -> list[StepExample]:
    """Rated (prefix, step) pairs -> one trajectory per maximal path, labelled wherever a rating exists.

    A path that is a strict prefix of another is folded into the longer ones (its label appears there); when
    the same (prefix, step) is rated twice, the first rating wins. Order: first appearance of each question.
    """
    ratings: dict[tuple[str, tuple[str, ...]], Rating] = {}
    for r in rated:
        ratings.setdefault((r.question, r.prefix + (r.step,)), r.rating)
    inner = {(q, path[:i]) for q, path in ratings for i in range(1, len(path))}
    out = []
    for (q, path) in ratings:
        if (q, path) not in inner:
            out.append(StepExample(q, path, tuple(ratings.get((q, path[:i + 1])) for i in range(len(path)))))
    return out


def read_step_data(paths: Sequence[str | Path], limit: int | None = None) -> list[StepExample]:
    """All trajectories of `paths`; each record's format is detected with STEP_FORMATS."""
    native, rated = [], []
    for path in paths:
        for lineno, rec in read_jsonl_any(path, limit):
            where = f"{path}:{lineno}"
            fmt = next((name for name, (match, _) in STEP_FORMATS.items() if match(rec)), None)
            if fmt is None:
                raise DataError(f"{where}: unknown step-label format (keys: {', '.join(sorted(rec))}); "
                                f"known: {', '.join(STEP_FORMATS)}")
            got = STEP_FORMATS[fmt][1](rec, where)
            if fmt == "steps":
                native.append(got)
            else:
                rated.extend(got)
    return native + trajectories_from_rated(rated)


def synthetic_chains(cfg: SyntheticConfig, seed: int) -> list[StepExample]:
    """Arithmetic chains: question "start a0", steps "a+b=c" / "a-b=c", each continuing from the previous result
    and keeping every value in 0..max_value.

    With probability `error_rate` one step (uniform position) is wrong: a "result" error writes c' = c ± d
    (d in 1..3); an "operand" error starts from a' != previous result (and computes a' op b correctly). The
    wrong step is labelled -1 and the chain stops there; all other steps are labelled 1.
    """
    rng = random.Random(seed)
    kinds = ("result", "operand") if cfg.errors == "both" else (cfg.errors,)
    out = []
    for k in range(cfg.n):
        n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
        a = rng.randint(0, cfg.max_value)
        question, values, steps = f"start {a}", [a], []
        for _ in range(n_steps):
            op, b, c = _arith_step(rng, values[-1], cfg.max_value)
            steps.append((op, b, c))
            values.append(c)
        good = StepExample(question, tuple(f"{v}{op}{b}={c}" for v, (op, b, c) in zip(values, steps)),
                           (1,) * n_steps, problem=f"synthetic-{k}")
        if rng.random() >= cfg.error_rate:
            out.append(good)
            continue
        i, kind = rng.randrange(n_steps), rng.choice(kinds)
        (op, b, c), v = steps[i], values[i]
        if kind == "operand":          # start from a wrong value, compute from it correctly
            v = rng.choice([x for x in range(cfg.max_value + 1) if x != values[i]])
            op, b, c = _arith_step(rng, v, cfg.max_value)
        else:
            c = rng.choice([x for x in range(c - 3, c + 4) if x != c and 0 <= x <= cfg.max_value])
        bad = StepExample(question, good.steps[:i] + (f"{v}{op}{b}={c}",), (1,) * i + (-1,), good.problem)
        out.append(bad)
    return out


def _arith_step(rng: random.Random, a: int, max_value: int) -> tuple[str, int, int]:
    """A random correct step from `a`: (op, b, a op b) with b >= 1 when possible and the result in 0..max_value."""
    op = rng.choice("+-")
    if (op == "+" and a >= max_value) or (op == "-" and a == 0):
        op = "-" if op == "+" else "+"
    room = max_value - a if op == "+" else a
    b = rng.randint(1, room) if room >= 1 else 0
    return op, b, a + b if op == "+" else a - b


def split_by_problem(examples: Sequence[StepExample], fraction: float, seed: int
                     ) -> tuple[list[StepExample], list[StepExample]]:
    """Held-out split by problem (a stable hash of `problem`, else the question): no problem is on both sides."""
    def held(e: StepExample) -> bool:
        digest = hashlib.sha1(f"{seed}:{e.problem or e.question}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < fraction * 2**64
    return [e for e in examples if not held(e)], [e for e in examples if held(e)]
