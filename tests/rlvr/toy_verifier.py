"""The toy verifier of test_eval.py, in a module of its own that imports no torch: pool workers load it to
unpickle the verifier, and under their address-space cap a CUDA build of torch does not fit."""
from __future__ import annotations

import time

from verifiers.base import Verdict, VerifyContext


class FirstCharVerifier:
    """answer = first character of the response (None if empty or a space); correct if it is in the gold.
    Gold `__raise__` raises, gold `__slow__` hangs for 30 s."""

    name = "first-char"

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        if ctx.gold == "__raise__":
            raise RuntimeError("toy verifier failure")
        if ctx.gold == "__slow__":
            time.sleep(30)
        answer = response[:1] if response[:1].strip() else None
        if answer is None:
            return Verdict("unparseable", 0.0, {"answer": None})
        ok = answer in ctx.gold
        return Verdict("correct" if ok else "wrong", float(ok), {"answer": answer})
