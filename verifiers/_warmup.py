"""Imported once by the verifier pool's forkserver (`verifiers.pool.PRELOAD`): verify a few answers so every
worker, including each replacement for a killed one, is forked with math-verify's LaTeX parser built and sympy's
lazy imports done (~0.2 s saved per new worker). Not part of `import verifiers` (the `_` keeps
`verifiers.builtins` from importing it)."""
from __future__ import annotations

_SAMPLES = ((r"\boxed{\frac{14}{3}}", r"\frac{14}{3}"), (r"\boxed{x \in [2, 5)}", "[2, 5)"),
            (r"\boxed{(1, \sqrt{2})}", r"(1, \sqrt{2})"), (r"\boxed{\{1, 2\}}", r"\{2, 1\}"),
            (r"\boxed{10\%}", "0.1"), (r"\boxed{\text{(C)}}", "C"), ("#### 1,000", "1000"), (r"\boxed{2.5}", "5/2"))


def warm_up() -> None:
    from verifiers.base import VerifyContext
    from verifiers.math import MathVerifier

    verifier = MathVerifier()
    for response, gold in _SAMPLES:
        verifier(response, VerifyContext(gold=gold))


try:
    warm_up()
except Exception:  # noqa: BLE001 (a failed warm-up only costs speed; workers parse lazily anyway)
    pass
