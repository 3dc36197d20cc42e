"""`length`: a non-positive reward shaped by response length L (tokens or characters).

Modes (registered by name in `PENALTIES`):

`dapo` — DAPO's soft overlong punishment (Yu et al. 2025, https://arxiv.org/abs/2503.14476, eq. 13), with
L_max = `max_len` and L_cache = `cache_len`:

    r(L) = 0                                  if L <= L_max - L_cache
         = ((L_max - L_cache) - L) / L_cache  if L_max - L_cache < L <= L_max
         = -1                                 if L > L_max

  e.g. L_max = 100, L_cache = 20: r(80) = 0, r(90) = -0.5, r(100) = -1, r(150) = -1.

`target` — distance from a target length, scale-free and capped (L1-style length control):

    r(L) = -min(1, |L - target| / target)

  e.g. target = 100: r(100) = 0, r(150) = -0.5, r(40) = -0.6, r(300) = -1.

Length: with `unit="tokens"`, `ctx.num_tokens` when the trainer set it, else an estimate
ceil(characters / `chars_per_token`) (info["estimated"] = True); with `unit="chars"`, len(response).
Status: `correct` when r == 0 (no penalty), else `wrong`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["LengthVerifier", "PENALTIES", "dapo_overlong", "target_distance"]


def dapo_overlong(length: int, max_len: int, cache_len: int) -> float:
    """DAPO soft overlong punishment (formula in the module docstring)."""
    soft = max_len - cache_len
    if length <= soft:
        return 0.0
    if length <= max_len:
        return (soft - length) / cache_len
    return -1.0


def target_distance(length: int, target: int) -> float:
    """-min(1, |L - target| / target)."""
    return -min(1.0, abs(length - target) / target) if length != target else 0.0   # no -0.0


PENALTIES: dict[str, Callable[["LengthVerifier", int], float]] = {
    "dapo": lambda v, n: dapo_overlong(n, v.max_len, v.cache_len),
    "target": lambda v, n: target_distance(n, v.target),
}


@register_verifier("length")
@dataclass(frozen=True)
class LengthVerifier:
    """Options: `mode` (dapo | target), `max_len` and `cache_len` (dapo), `target` (target),
    `unit` (tokens | chars), `chars_per_token` (estimate used when ctx.num_tokens is unknown)."""

    cheap = True    # arithmetic on a length: the verifier pool runs many such calls per task (verifiers/pool.py)

    mode: str = "dapo"
    max_len: int = 4096
    cache_len: int = 512
    target: int = 1024
    unit: str = "tokens"
    chars_per_token: float = 4.0

    def __post_init__(self) -> None:
        if self.mode not in PENALTIES:
            raise ValueError(f"length verifier: unknown mode {self.mode!r}; known: {', '.join(PENALTIES)}")
        if self.unit not in ("tokens", "chars"):
            raise ValueError(f"length verifier: unit must be 'tokens' or 'chars', got {self.unit!r}")
        if not 0 < self.cache_len <= self.max_len:
            raise ValueError(f"length verifier: need 0 < cache_len <= max_len, got cache_len={self.cache_len}, "
                             f"max_len={self.max_len}")
        if self.target <= 0 or self.chars_per_token <= 0:
            raise ValueError("length verifier: target and chars_per_token must be > 0")

    def measure(self, response: str, ctx: VerifyContext) -> tuple[int, bool]:
        """(length, estimated?) in the configured unit."""
        if self.unit == "chars":
            return len(response), False
        if ctx.num_tokens is not None:
            return int(ctx.num_tokens), False
        return math.ceil(len(response) / self.chars_per_token), True

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        length, estimated = self.measure(response or "", ctx)
        reward = PENALTIES[self.mode](self, length)
        status = "correct" if reward == 0.0 else "wrong"
        return Verdict(status, reward, {"length": length, "unit": self.unit, "estimated": estimated,
                                        "reason": f"{self.mode} penalty {reward:.3f} at length {length}"})
