"""`integer`: exact integer answers (the arithmetic toy, or any task whose gold is an integer).

Extraction: the text inside the last `<answer>...</answer>` when present (else, unless `require_tags`, the
whole response); in it, the first or last integer (`pick`). Thousands separators ("1,234") are accepted,
a number with a non-zero fractional part ("2.5") is not an integer and is skipped, "42.0" counts as 42.
With `reverse=True` the model writes the digits in reverse order ("975" for 579); they are reversed back
before comparing, so leading zeros of the reversed form matter ("005" -> 500, "5" -> 5).

Statuses: correct (reward 1), wrong, unparseable (no integer found); `error` if the gold is not an integer
(a task bug, not a model mistake). info["answer"] is the normalised integer string, e.g. "-12".
"""
from __future__ import annotations

import re
from typing import Literal

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["IntegerVerifier", "extract_integer"]

# An integer not glued to a word or a decimal point before it; optional ",ddd" groups and ".000" tail.
_INT = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?!\d)")
_TAGS = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def extract_integer(text: str, *, pick: str = "last", require_tags: bool = False,
                    reverse: bool = False) -> str | None:
    """The answer as a normalised integer string (see module doc), or None when there is none."""
    tagged = _TAGS.findall(text)
    if tagged:
        text = tagged[-1]
    elif require_tags:
        return None
    found = [m for m in _INT.finditer(text) if not (m.group(3) and m.group(3).strip("0"))]
    if not found:
        return None
    m = found[-1] if pick == "last" else found[0]
    digits = m.group(2).replace(",", "")
    if reverse:
        digits = digits[::-1]
    return str(int(m.group(1) + digits))


@register_verifier("integer")
class IntegerVerifier:
    """Options: `pick` ("last" | "first"), `require_tags`, `reverse` (digits written reversed)."""

    cheap = True    # a regex and an int(): the verifier pool runs many such calls per task (verifiers/pool.py)

    def __init__(self, pick: Literal["last", "first"] = "last", require_tags: bool = False,
                 reverse: bool = False) -> None:
        if pick not in ("last", "first"):
            raise ValueError(f"bad options for verifier 'integer': pick must be 'last' or 'first', got {pick!r}")
        self.pick, self.require_tags, self.reverse = pick, require_tags, reverse

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        try:
            gold = int(str(ctx.gold).strip().replace(",", ""))
        except ValueError:
            return Verdict("error", 0.0, {"reason": f"gold {ctx.gold!r} is not an integer"})
        answer = extract_integer(response, pick=self.pick, require_tags=self.require_tags, reverse=self.reverse)
        if answer is None:
            return Verdict("unparseable", 0.0, {"answer": None})
        ok = int(answer) == gold
        return Verdict("correct" if ok else "wrong", 1.0 if ok else 0.0, {"answer": answer})
