"""`math`: is the final answer in a free-form response mathematically equal to a bare gold answer?

    reward = 1.0 if status == "correct" else 0.0

Steps (each a small function below):
1. extract the answer snippet from the response (`verifiers.extract`, order configurable; default
   `\\boxed{}` > `<answer>` tags > `#### n` > "the answer is X" > last number);
2. parse gold and snippet with math-verify, each wrapped as `\\boxed{...}` (on MATH-500 `\\boxed{}` and `$...$`
   wrapping agree on every gold; `\\boxed{}` parses about 2x faster; a bare string loses 51/500 golds), falling
   back to math-verify's own extraction on the raw snippet;
3. compare with `math_verify.verify` (symbolic and numeric equality, sets / intervals / tuples / matrices,
   units and `\\%` stripped); if that says no and either side is a decimal number, compare numerically with
   `rel_tol` (`|pred - gold| <= rel_tol * |gold|`); exact integers/rationals are never compared with tolerance.
   Text answers that math-verify cannot parse are compared as normalised strings.

Statuses: `correct` / `wrong`; `unparseable` when no answer is found or it does not parse; `error` when the gold
itself does not parse (a data bug, not a model mistake). `info["answer"]` is a normalised string of the
extracted answer (hashable; for majority voting) and `info["reason"]` says why.

math-verify's own `signal.alarm` timeouts are disabled (`parsing_timeout=None`, `timeout_seconds=None`): this
code must run under `verifiers.pool`, whose deadline kills the worker. `check`, `check_batch` and `equivalent`
go through the pool; calling a `MathVerifier` directly has no deadline at all.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from verifiers.base import Verdict, VerifyContext, register_verifier
from verifiers.extract import DEFAULT_ORDER, EXTRACTORS, extract_answer

__all__ = ["MathVerifier", "check", "check_batch", "equivalent", "equivalent_batch", "parse_answer"]


@register_verifier("math")
@dataclass(frozen=True)
class MathVerifier:
    """Options: `order` (extractor names, first hit wins), `rel_tol` (numeric tolerance for decimals),
    `float_rounding` (decimal places math-verify rounds floats to), `strict` (math-verify strict mode:
    variable names matter, sets and tuples differ)."""

    order: tuple[str, ...] = DEFAULT_ORDER
    rel_tol: float = 1e-4
    float_rounding: int = 6
    strict: bool = True

    def __post_init__(self) -> None:
        order = (self.order,) if isinstance(self.order, str) else tuple(self.order)
        unknown = [n for n in order if n not in EXTRACTORS]
        if unknown or not order:
            raise ValueError(f"math verifier: bad extractor order {list(order)}; known: {', '.join(EXTRACTORS)}")
        object.__setattr__(self, "order", order)
        if not self.rel_tol >= 0:
            raise ValueError(f"math verifier: rel_tol must be >= 0, got {self.rel_tol}")

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        gold = "" if ctx.gold is None else str(ctx.gold).strip()
        if not gold:
            return Verdict("error", 0.0, {"answer": None, "reason": "no gold answer"})
        gold_parsed = _parse_gold(gold)
        if not _has_math(gold_parsed):
            return Verdict("error", 0.0, {"answer": None, "reason": f"gold did not parse: {gold[:200]!r}"})
        found = extract_answer(response or "", self.order)
        if found is None:
            return Verdict("unparseable", 0.0, {"answer": None, "reason": "no answer found"})
        extractor, snippet = found
        parsed = parse_answer(snippet)
        info: dict[str, Any] = {"answer": answer_string(parsed, snippet), "extractor": extractor}
        if not _has_math(parsed):
            if normalize_text(snippet) == normalize_text(gold):
                return Verdict("correct", 1.0, {**info, "reason": "text match"})
            return Verdict("unparseable", 0.0, {**info, "reason": f"answer did not parse: {snippet[:200]!r}"})
        if _equal(gold_parsed, parsed, self):
            return Verdict("correct", 1.0, {**info, "reason": "equal"})
        return Verdict("wrong", 0.0, {**info, "reason": "not equal"})


# ------------------------------------------------------------------------------------------------ parsing
@lru_cache(maxsize=1)
def _mv():
    """math_verify, imported on first use (keeps `import verifiers` free of sympy) with its logging quiet."""
    import logging

    import math_verify

    # It warns once that timeouts are disabled (the pool owns them) and on every failed parse.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    configs = (math_verify.LatexExtractionConfig(boxed_match_priority=0), math_verify.ExprExtractionConfig())
    return math_verify, configs


_SCI_RE = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?|-?\.[0-9]+)[eE]([-+]?[0-9]+)")
_TEXT_NUMBER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{\s*\(?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*\)?\s*\}")


def parse_answer(snippet: str) -> list:
    """A bare answer (`\\frac{14}{3}`, `x \\in [2, 5)`) -> math-verify's parse list [sympy object, string]."""
    mv, configs = _mv()
    snippet = snippet.strip()
    text_number = _TEXT_NUMBER_RE.fullmatch(snippet)
    if text_number:  # AoPS-style `\textbf{(073)}`: math-verify reads \text{...} as a symbol named "073"
        snippet = text_number.group(1)
    sci = _SCI_RE.fullmatch(snippet)
    if sci:  # `2.5e-3`: LaTeX would read the e as Euler's number
        snippet = f"{sci.group(1)} \\times 10^{{{sci.group(2)}}}"
    parsed = mv.parse(f"\\boxed{{{snippet}}}", configs, parsing_timeout=None)
    if not _has_math(parsed):
        raw = mv.parse(snippet, configs, parsing_timeout=None)
        if _has_math(raw):
            return raw
    return parsed


_parse_gold = lru_cache(maxsize=4096)(parse_answer)   # the same gold is checked once per sample in a group


def _has_math(parsed: Sequence) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def answer_string(parsed: Sequence, snippet: str) -> str:
    """Hashable normalised form of an answer: sympy's `str` when it parsed, else the normalised text."""
    for p in parsed:
        if not isinstance(p, str):
            try:
                return str(p)
            except Exception:  # noqa: BLE001 (str of a huge number can raise: int max str digits)
                break
    return normalize_text(snippet)


_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle|\$|\s+")


def normalize_text(s: str) -> str:
    """Light normalisation for comparing text answers: `\\text{(C)} ` -> `(c)`."""
    s = _TEXT_CMD_RE.sub(r"\1", s)
    s = _SPACING_RE.sub("", s)
    return s.rstrip(".").lower()


# ------------------------------------------------------------------------------------------------ comparison
def _equal(gold: Sequence, pred: Sequence, opts: MathVerifier) -> bool:
    mv, _ = _mv()
    if mv.verify(list(gold), list(pred), float_rounding=opts.float_rounding, strict=opts.strict,
                 timeout_seconds=None):
        return True
    return _numeric_close(gold, pred, opts.rel_tol)


def _numeric_close(gold: Sequence, pred: Sequence, rel_tol: float) -> bool:
    """|pred - gold| <= rel_tol * |gold| for plain numbers when at least one side is a decimal (sympy Float);
    two exact values (integers, fractions, surds) must be equal exactly, which math-verify already decided."""
    import sympy

    g = next((x for x in gold if isinstance(x, sympy.Expr)), None)
    p = next((x for x in pred if isinstance(x, sympy.Expr)), None)
    if g is None or p is None or rel_tol <= 0:
        return False
    if not (g.is_number and p.is_number) or not (g.has(sympy.Float) or p.has(sympy.Float)):
        return False
    try:
        gv, pv = complex(sympy.N(g, 30)), complex(sympy.N(p, 30))
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return False
    if not all(math.isfinite(v) for v in (gv.real, gv.imag, pv.real, pv.imag)):
        return False
    return abs(pv - gv) <= rel_tol * abs(gv) + 1e-12


def _equivalent_verdict(a: str, b: str, rel_tol: float = 1e-4) -> Verdict:
    """Worker side of `equivalent`: both are bare answers; equal in either direction counts."""
    if normalize_text(a) == normalize_text(b) and normalize_text(a):   # the common maj@k case: same text
        return Verdict("correct", 1.0, {"answer": normalize_text(a), "reason": "same text"})
    pa, pb = parse_answer(a), parse_answer(b)
    info = {"answer": answer_string(pa, a), "other": answer_string(pb, b)}
    if not (_has_math(pa) and _has_math(pb)):
        same = normalize_text(a) == normalize_text(b) and bool(normalize_text(a))
        return Verdict("correct" if same else "unparseable", float(same), {**info, "reason": "text"})
    opts = MathVerifier(rel_tol=rel_tol)
    same = _equal(pa, pb, opts) or _equal(pb, pa, opts)
    return Verdict("correct" if same else "wrong", float(same), {**info, "reason": "math"})


# ------------------------------------------------------------------------------------------------ public API
_DEFAULT = MathVerifier()


def check(response: str, gold: str, timeout: float = 5.0) -> Verdict:
    """Verify one response against a bare gold answer, in the pool with a hard `timeout` (seconds)."""
    from verifiers.pool import run_one

    return run_one(_DEFAULT, response, VerifyContext(gold=gold), timeout=timeout)


def check_batch(pairs: Sequence[tuple[str, str]], timeout: float = 5.0) -> list[Verdict]:
    """`check` for many (response, gold) pairs in parallel; verdicts in input order."""
    from verifiers.pool import run_batch

    return run_batch([(_DEFAULT, (r, VerifyContext(gold=g))) for r, g in pairs], timeout=timeout)


def equivalent(a: str, b: str, timeout: float = 5.0) -> bool:
    """Are two bare answers mathematically equal? (answer clustering for maj@k; a timeout counts as no)."""
    return equivalent_batch([(a, b)], timeout)[0]


def equivalent_batch(pairs: Sequence[tuple[str, str]], timeout: float = 5.0) -> list[bool]:
    from verifiers.pool import run_batch

    verdicts = run_batch([(_equivalent_verdict, (a, b)) for a, b in pairs], timeout=timeout)
    return [v.status == "correct" for v in verdicts]
