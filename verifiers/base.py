"""The verifier contract: every reward function takes a response and a typed context and returns a Verdict.

Verifiers never raise on model output (bad output is `unparseable` or `wrong`); the pool that runs them
(`verifiers.pool`) enforces deadlines by killing worker processes, so a verifier needs no timeout logic.
A verifier must be picklable (it is shipped to worker processes): a plain class with simple options.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

Status = Literal["correct", "wrong", "unparseable", "timeout", "error"]
STATUSES: tuple[str, ...] = ("correct", "wrong", "unparseable", "timeout", "error")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one verification. `reward` is in the verifier's own scale (usually [0, 1])."""

    status: Status
    reward: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class VerifyContext:
    """Everything a verifier may look at besides the response text."""

    gold: str | None = None              # reference answer (math), test code (code), target (countdown) ...
    prompt: str = ""                     # the rendered prompt the response answers
    example: dict[str, Any] = field(default_factory=dict)  # the task's raw record (extra fields)
    truncated: bool = False              # generation hit max_new_tokens
    num_tokens: int | None = None        # response length in tokens, when known


class Verifier(Protocol):
    name: str

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict: ...


_REGISTRY: dict[str, Callable[..., Verifier]] = {}


def register_verifier(name: str):
    """Class decorator: `@register_verifier("math")`. A duplicate name raises."""

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"verifier {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def get_verifier(name: str, **options: Any) -> Verifier:
    """Build a registered verifier with its options. An unknown name lists the valid ones."""
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown verifier {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as e:
        raise ValueError(f"bad options for verifier {name!r}: {e}") from None


def list_verifiers() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Imported lazily so `verifiers.base` stays cheap and free of import cycles.
    from verifiers import builtins  # noqa: F401
