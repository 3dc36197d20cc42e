"""`countdown`: an arithmetic expression over the given numbers that must evaluate to the target.

The numbers and the target come from the task record (`ctx.example["numbers"]`, `ctx.example["target"]`,
falling back to `ctx.gold` for the target). The expression is the last `<answer>...</answer>` of the response,
else its last non-empty line; a trailing "= 24" is dropped.

Evaluation is safe by construction, not by sandboxing: the text is parsed with `ast` and only integer
literals, + - * /, unary +/- and parentheses are walked; anything else (names, calls, attributes, `**`, `%`,
floats, strings) is `unparseable`. Arithmetic is exact (`fractions.Fraction`), so 7/2*2 == 7. Division by
zero is `wrong`. Each literal must be one of the given numbers, each used at most once (multiset inclusion),
or exactly once with `exact=True`.

Statuses: correct (reward 1), wrong (valid expression; bad value or bad number use), unparseable; `error` when
the record lacks numbers/target (a task bug).
"""
from __future__ import annotations

import ast
import operator
import re
from collections import Counter
from fractions import Fraction

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["CountdownVerifier", "extract_expression", "evaluate"]

MAX_EXPR_CHARS = 300          # longer answers are not a countdown expression; also bounds parse/eval work
_TAGS = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_UNICODE_OPS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"})
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class _Rejected(Exception):
    """The expression uses syntax outside the allowed grammar."""


def extract_expression(response: str) -> str | None:
    tagged = _TAGS.findall(response)
    if tagged:
        text = tagged[-1]
    else:
        lines = [ln for ln in response.strip().splitlines() if ln.strip()]
        if not lines:
            return None
        text = lines[-1]
    text = text.translate(_UNICODE_OPS).strip().strip("$").strip()
    text = text.split("=")[0].strip()       # "(3 + 5) * 3 = 24" -> "(3 + 5) * 3"
    return text or None


def evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """Value of `expr` and the integer literals it uses. Raises _Rejected (bad syntax) or ZeroDivisionError."""
    if len(expr) > MAX_EXPR_CHARS:
        raise _Rejected(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as e:
        raise _Rejected(f"not an expression ({type(e).__name__})") from None
    used: list[int] = []
    return _eval(tree.body, used), used


def _eval(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:   # not bool, float, str
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, used), _eval(node.right, used))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, used))
    what = type(getattr(node, "op", None) or node).__name__      # "Pow" rather than "BinOp"
    raise _Rejected(f"{what} is not allowed")


@register_verifier("countdown")
class CountdownVerifier:
    """Options: `exact` (each given number must be used exactly once instead of at most once)."""

    def __init__(self, exact: bool = False) -> None:
        self.exact = exact

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        numbers = ctx.example.get("numbers")
        target = ctx.example.get("target", ctx.gold)
        try:
            target = Fraction(str(target))
            given = Counter(int(n) for n in numbers)
        except (TypeError, ValueError, ZeroDivisionError):
            return Verdict("error", 0.0, {"reason": f"record lacks numbers/target ({numbers!r}, {target!r})"})
        expr = extract_expression(response)
        if expr is None:
            return Verdict("unparseable", 0.0, {"answer": None, "reason": "empty response"})
        try:
            value, used = evaluate(expr)
        except _Rejected as e:
            return Verdict("unparseable", 0.0, {"answer": expr, "reason": str(e)})
        except ZeroDivisionError:
            return Verdict("wrong", 0.0, {"answer": expr, "reason": "division by zero"})
        info = {"answer": expr, "value": str(value)}
        extra = Counter(used) - given
        if extra:
            return Verdict("wrong", 0.0, {**info, "reason": f"numbers not available: {sorted(extra.elements())}"})
        if self.exact and Counter(used) != given:
            unused = sorted((given - Counter(used)).elements())
            return Verdict("wrong", 0.0, {**info, "reason": f"numbers not used: {unused}"})
        ok = value == target
        return Verdict("correct" if ok else "wrong", 1.0 if ok else 0.0,
                       info if ok else {**info, "reason": f"value {value} != target {target}"})
