"""The rollout contract: sampling parameters, one sampled completion, and the engine protocol + registry.

A trainer talks to any backend (HF `generate`, vLLM, ...) only through `RolloutEngine`. A backend is one module
`rlvr/rollout/<name>.py` whose engine class is decorated with `@register_engine("<name>")`; `get_engine(name)`
imports that module on first use, so a backend's heavy dependencies load only when it is asked for.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence, Union, runtime_checkable

__all__ = ["SamplingParams", "Rollout", "RolloutEngine", "FinishReason", "Prompt", "register_engine", "get_engine",
           "list_engines"]

FinishReason = Literal["stop", "length"]
Prompt = Union[str, Sequence[int]]          # text, or token ids passed through unchanged


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions. Defaults are plain ancestral sampling at temperature 1 (what RL wants)."""

    n: int = 1                              # completions per prompt (a GRPO group)
    temperature: float = 1.0                # 0 = greedy (argmax)
    top_p: float = 1.0                      # nucleus mass kept; 1.0 = off
    top_k: int = 0                          # keep the k most likely tokens; 0 = off
    max_new_tokens: int = 256               # completion budget; hitting it gives finish_reason "length"
    min_new_tokens: int = 0                 # EOS is masked out before this many tokens
    seed: int | None = None                 # same seed + same inputs -> same samples; None = global RNG
    stop: tuple[str, ...] = ()              # stop strings: generation ends once the text contains one
    include_stop_str_in_output: bool = True  # keep the matched stop string at the end of `text`

    def __post_init__(self) -> None:
        if isinstance(self.stop, (list, str)):       # accept a list or a single string, store a tuple
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        checks = [
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (0 <= self.min_new_tokens <= self.max_new_tokens,
             f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}"),
            (all(isinstance(s, str) and s for s in self.stop), f"stop strings must be non-empty: {self.stop!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SamplingParams: {msg}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Rollout:
    """One sampled completion.

    `completion_ids` are the sampled tokens, including a final EOS token when the model emitted one and the
    token that completed a stop string; padding is never included. `logprobs[i]` is log pi(completion_ids[i])
    under the distribution the backend documents (for HF: log_softmax(logits / T), see `rlvr.rollout.hf`).
    `text` is the decoded completion without special tokens.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: FinishReason
    stop_str: str | None = None             # the stop string that ended generation, if any

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@runtime_checkable
class RolloutEngine(Protocol):
    """What a trainer needs from a generation backend."""

    tokenizer: Any

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Rollout]]:
        """Sample `params.n` completions for each prompt; returns one list of n Rollouts per prompt, in order.

        A prompt is text (encoded by the engine's tokenizer) or a list of token ids used as they are (multi-turn
        rollouts pass the exact dialogue tokens so that nothing is re-tokenised between turns)."""
        ...

    def update_weights(self, model_or_state_dict: Any) -> None:
        """Make the engine sample from new policy weights (a no-op when it shares the trainer's module)."""
        ...

    def close(self) -> None:
        """Free the engine's resources; idempotent."""
        ...


_ENGINES: dict[str, Callable[..., RolloutEngine]] = {}


def register_engine(name: str):
    """Class decorator: `@register_engine("hf")`. A duplicate name raises."""

    def deco(cls):
        if name in _ENGINES and _ENGINES[name] is not cls:
            raise ValueError(f"rollout engine {name!r} is already registered by {_ENGINES[name]!r}")
        _ENGINES[name] = cls
        cls.backend_name = name
        return cls

    return deco


def _backend_modules() -> list[str]:
    import rlvr.rollout
    return [m.name for m in pkgutil.iter_modules(rlvr.rollout.__path__) if m.name != "base"
            and not m.name.startswith("_")]


def list_engines() -> list[str]:
    """Backend names: registered engines plus backend modules not imported yet."""
    return sorted(set(_ENGINES) | set(_backend_modules()))


def get_engine(name: str, **options: Any) -> RolloutEngine:
    """Build the engine `name` (e.g. `get_engine("hf", model=..., tokenizer=...)`). Unknown names list the valid
    ones; the backend module `rlvr.rollout.<name>` is imported on first use."""
    if name not in _ENGINES and name in _backend_modules():
        importlib.import_module(f"rlvr.rollout.{name}")
    if name not in _ENGINES:
        raise KeyError(f"unknown rollout backend {name!r}; known: {', '.join(list_engines())}")
    return _ENGINES[name](**options)
