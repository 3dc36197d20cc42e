"""Reward functions ("verifiers"): one contract (`verifiers.base`), one process pool with hard deadlines
(`verifiers.pool`), one small module per verifier (`math`, `format`, `length`, `repetition`, ...).

`import verifiers` stays cheap: no sympy / math-verify until a math answer is actually parsed (in a worker).
"""
from __future__ import annotations

from typing import Any

from verifiers.base import Verdict, VerifyContext, get_verifier, list_verifiers, register_verifier

__all__ = ["Verdict", "VerifyContext", "register_verifier", "get_verifier", "list_verifiers", "check"]


def __getattr__(name: str) -> Any:
    # `verifiers.check` is `verifiers.math.check`, imported on first use.
    if name == "check":
        from verifiers.math import check

        return check
    raise AttributeError(f"module 'verifiers' has no attribute {name!r}")
