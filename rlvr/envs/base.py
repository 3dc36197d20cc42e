"""The environment contract for multi-turn rollouts, the env registry, and how observations become text.

An `Env` is one dialogue's world. The rollout driver (rlvr.rollout.multiturn) makes one instance per dialogue
(G per prompt), calls `reset(example)` once for the first observation, then after every model turn
`step(model_text)`, which returns a `StepResult`: the feedback observation to append (None when done), the
turn's reward, whether the dialogue is over, and free-form info. The driver, not the env, enforces `max_turns`
and the dialogue's token budget (see rlvr.rollout.multiturn for the truncation rule).

An observation is text (appended verbatim, so it carries its own separators) or a list of chat messages
(`[{"role": "user", "content": ...}]`), rendered with the tokenizer's chat template when it has one
(`render_observation`).

A new env is one module `rlvr/envs/<name>.py` with a class decorated `@register_env("<name>")`; the package's
modules are imported on the first lookup, so nothing else needs editing.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from rlvr.algos.registry import Registry
from rlvr.errors import ConfigError

__all__ = ["Observation", "StepResult", "Env", "ENVS", "register_env", "get_env_class", "list_envs", "make_env",
           "render_observation"]

Observation = Union[str, list[dict[str, str]]]

ENVS = Registry("environment")


@dataclass(frozen=True)
class StepResult:
    """What the env says after one model turn."""

    observation: Observation | None   # feedback appended before the next model turn; None when done
    reward: float                     # this turn's reward r_t (the dialogue's outcome is Σ_t r_t)
    done: bool                        # the dialogue is over (solved, or the env gives up)
    info: dict[str, Any] = field(default_factory=dict)


class Env(ABC):
    """One dialogue. Constructed as `cls(task=..., tokenizer=..., max_turns=..., **options)` for every dialogue.

    task: the recipe's Task (data, template, verifiers); tokenizer: the policy's tokenizer (for chat templates);
    max_turns: the most model turns the driver will allow (an env may use it, e.g. to say "last try").
    """

    def __init__(self, *, task: Any = None, tokenizer: Any = None, max_turns: int = 1):
        self.task, self.tokenizer, self.max_turns = task, tokenizer, max_turns

    @abstractmethod
    def reset(self, example: Any) -> Observation:
        """Start a dialogue on `example`; returns the first observation. Must depend on the example only: the G
        dialogues of a group share their first prompt."""

    @abstractmethod
    def step(self, text: str) -> StepResult:
        """The model said `text` (this turn's completion, decoded); returns feedback, reward, done, info."""

    @classmethod
    def step_batch(cls, envs: Sequence["Env"], texts: Sequence[str]) -> list[StepResult]:
        """Step many dialogues of this class at once (the driver calls this once per turn). Override it to batch
        expensive work such as verifier calls; the default steps one by one."""
        return [env.step(text) for env, text in zip(envs, texts)]


def register_env(name: str):
    """Class decorator: `@register_env("retry")`. A duplicate name raises."""
    return ENVS.register(name)


def _import_env_modules() -> None:
    import rlvr.envs
    for m in pkgutil.iter_modules(rlvr.envs.__path__):
        if m.name not in ("base", "config") and not m.name.startswith("_"):
            importlib.import_module(f"rlvr.envs.{m.name}")


def list_envs() -> list[str]:
    _import_env_modules()
    return ENVS.names()


def get_env_class(name: str) -> type[Env]:
    """The env class registered as `name`; an unknown name is a ConfigError listing the valid ones."""
    _import_env_modules()
    return ENVS.get(name)


def make_env(name: str, *, task: Any, tokenizer: Any = None, max_turns: int = 1,
             options: dict[str, Any] | None = None) -> Callable[[], Env]:
    """A zero-argument factory of fresh `name` envs. Builds one now, so bad options fail here with one line."""
    cls = get_env_class(name)
    factory = functools.partial(cls, task=task, tokenizer=tokenizer, max_turns=max_turns, **(options or {}))
    try:
        factory()
    except TypeError as e:
        raise ConfigError(f"grpo.env.options: bad options for environment {name!r}: {e}") from None
    return factory


def _has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def render_observation(obs: Observation, tokenizer: Any = None, *, first: bool = False) -> str:
    """The text an observation adds to the dialogue.

    - text: itself.
    - messages, first observation: the chat template over them with the generation prompt; without a template,
      the contents joined by newlines plus a final newline.
    - messages, later observation: only what the chat template adds for them after an assistant turn (rendered
      after a placeholder exchange and cut at its end), generation prompt included; without a template, a
      newline, the contents joined by newlines, and a newline.
    """
    if isinstance(obs, str):
        return obs
    if not isinstance(obs, list) or not all(isinstance(m, dict) and "content" in m for m in obs):
        raise TypeError(f"an observation is a str or a list of {{role, content}} messages, got {obs!r:.80}")
    if not _has_chat_template(tokenizer):
        body = "\n".join(str(m["content"]) for m in obs) + "\n"
        return body if first else "\n" + body
    if first:
        return tokenizer.apply_chat_template(obs, tokenize=False, add_generation_prompt=True)
    base = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    before = tokenizer.apply_chat_template(base, tokenize=False)
    after = tokenizer.apply_chat_template(base + list(obs), tokenize=False, add_generation_prompt=True)
    if not after.startswith(before):
        raise ValueError("the chat template does not render a follow-up turn as a suffix of the dialogue; "
                         "return text observations from this env instead")
    return after[len(before):]
