"""Sources → examples and tasks; mixing several inputs by weight; per-source reward routing.

A run's second RL stage in DeepSeek-R1 mixes prompt kinds and rewards each with its own judge: rule-based
verifiers where an answer can be checked, a reward model elsewhere. `MixtureTask` does that routing: every
example carries its source name, and scoring sends each response to its own source's task.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from tasks.base import Example, Score, Task, WeightedVerifier

T = TypeVar("T")
SOURCE_KEY = "_source"


def mix_by_weight(parts: Sequence[Sequence[T]], weights: Sequence[float | None], seed: int) -> list[T]:
    """Mix lists so list i makes up weight_i / Σ weights of the result, as large as the lists allow:
    N = min_i(len_i / share_i), take round(share_i · N) of each (a seeded sample), then shuffle.
    All weights None: plain concatenation (no shuffle). Mixed None/number is an error."""
    if all(w is None for w in weights):
        return [x for p in parts for x in p]
    if any(w is None for w in weights):
        raise ValueError("give a weight to every input of a mixture, or to none")
    if any(w <= 0 for w in weights):  # type: ignore[operator]
        raise ValueError(f"mixing weights must be > 0, got {list(weights)}")
    total = sum(weights)  # type: ignore[arg-type]
    shares = [w / total for w in weights]  # type: ignore[operator]
    n = min(len(p) / s for p, s in zip(parts, shares))
    rng = random.Random(seed)
    out: list[T] = []
    for p, s in zip(parts, shares):
        k = min(len(p), round(s * n))
        out += rng.sample(list(p), k)
    rng.shuffle(out)
    return out


def source_task(cfg: Any, *, reward_model_dir: str | None = None) -> Task:
    """The task of a source: its registered task, plus extra verifiers; with a reward model, the RM verifier
    becomes the reward (weight 1, primary) and the task's own verifiers stay as weight-0 diagnostics."""
    import os

    from tasks.registry import get_task
    from verifiers.base import get_verifier

    if cfg.data_dir:
        os.environ["RLVR_DATA_DIR"] = cfg.data_dir
    task = get_task(cfg.task, **cfg.options)
    verifiers = list(task.verifiers) + [WeightedVerifier(get_verifier(s.name, **s.options), s.weight)
                                        for s in cfg.extra_verifiers]
    primary = task.primary
    if reward_model_dir is not None:
        rm = get_verifier("reward_model", model=reward_model_dir, **cfg.reward_model_options)
        verifiers = [WeightedVerifier(rm, 1.0)] + [dataclasses.replace(w, weight=0.0) for w in verifiers]
        primary = "reward_model"
    return dataclasses.replace(task, verifiers=verifiers, primary=primary, _cache={})


def source_examples(task: Task, cfg: Any, seed: int) -> list[Example]:
    """The source's slice `take` of its split (after a seeded shuffle), each tagged with nothing yet."""
    exs = list(task.load(cfg.split))
    if cfg.shuffle:
        random.Random(seed).shuffle(exs)
    start, stop = cfg.take
    return exs[start:stop]


def tag(examples: Sequence[Example], source: str) -> list[Example]:
    """Copies whose id and meta name their source (ids stay unique across sources)."""
    return [dataclasses.replace(e, id=f"{source}/{e.id}", meta={**e.meta, SOURCE_KEY: source}) for e in examples]


@dataclass
class MixtureTask:
    """Quacks like a Task for the trainers: render and score route each example to its source's task."""

    parts: dict[str, Task]
    name: str = "mixture"

    def __post_init__(self) -> None:
        seen: dict[str, WeightedVerifier] = {}
        for t in self.parts.values():
            for w in t.verifiers:
                seen.setdefault(w.name, w)
        self.verifiers = list(seen.values())
        self.primary = next(iter(self.parts.values())).primary
        self.description = "mixture of " + ", ".join(self.parts)

    def part(self, example: Example) -> Task:
        return self.parts[example.meta[SOURCE_KEY]]

    def render(self, example: Example, tokenizer: Any = None) -> str:
        return self.part(example).render(example, tokenizer)

    def score(self, responses: Sequence[str], examples: Sequence[Example], *,
              truncated: Sequence[bool] | None = None, num_tokens: Sequence[int | None] | None = None,
              timeout: float = 5.0) -> list[Score]:
        n = len(responses)
        truncated = list(truncated or [False] * n)
        num_tokens = list(num_tokens or [None] * n)
        out: list[Score | None] = [None] * n
        by_source: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            by_source.setdefault(ex.meta[SOURCE_KEY], []).append(i)
        for src, idx in by_source.items():
            scores = self.parts[src].score([responses[i] for i in idx], [examples[i] for i in idx],
                                           truncated=[truncated[i] for i in idx],
                                           num_tokens=[num_tokens[i] for i in idx], timeout=timeout)
            for i, s in zip(idx, scores):
                out[i] = s
        return out  # type: ignore[return-value]

