"""`repetition`: n-gram repetition penalty (as in open-r1's repetition penalty reward).

Split the response into units (lower-cased whitespace words, or characters with `unit="chars"`), form the
M = #units - n + 1 consecutive n-grams, and count the distinct ones U:

    repeated = 1 - U / M            (0 when M <= 0: too short to repeat)
    reward   = max_penalty * repeated           (max_penalty <= 0, default -1)

e.g. n = 2, "a b a b a b": bigrams ab ba ab ba ab -> M = 5, U = 2, repeated = 0.6, reward = -0.6.
Status: `correct` when repeated <= `tolerance` (default 0.1; ordinary prose repeats a few n-grams), else
`wrong`; the reward is the penalty either way.
"""
from __future__ import annotations

from dataclasses import dataclass

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["RepetitionVerifier", "repeated_fraction"]


def repeated_fraction(units: list[str], n: int) -> float:
    """1 - distinct n-grams / all n-grams (0.0 when there are none)."""
    total = len(units) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(units[i:i + n]) for i in range(total)})
    return 1.0 - distinct / total


@register_verifier("repetition")
@dataclass(frozen=True)
class RepetitionVerifier:
    """Options: `n` (n-gram size), `unit` (words | chars), `max_penalty` (reward at full repetition, <= 0),
    `tolerance` (largest repeated fraction that still counts as `correct`)."""

    cheap = True    # one pass over the n-grams: the verifier pool runs many such calls per task (verifiers/pool.py)

    n: int = 3
    unit: str = "words"
    max_penalty: float = -1.0
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"repetition verifier: n must be >= 1, got {self.n}")
        if self.unit not in ("words", "chars"):
            raise ValueError(f"repetition verifier: unit must be 'words' or 'chars', got {self.unit!r}")
        if self.max_penalty > 0:
            raise ValueError(f"repetition verifier: max_penalty must be <= 0, got {self.max_penalty}")

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        text = (response or "").lower()
        units = text.split() if self.unit == "words" else list(text)
        repeated = repeated_fraction(units, self.n)
        reward = self.max_penalty * repeated if repeated else 0.0   # no -0.0
        status = "correct" if repeated <= self.tolerance else "wrong"
        return Verdict(status, reward, {"repeated": repeated, "reason": f"{repeated:.1%} repeated {self.n}-grams"})
