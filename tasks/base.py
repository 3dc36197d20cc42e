"""A Task = a data source (prompts + gold) + a prompt template + weighted verifiers.

The same Task object serves training (prompts and rewards), rejection sampling (keep verified-correct
samples) and evaluation (pass@k / maj@k over the primary verifier).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from verifiers.base import Verdict, Verifier, VerifyContext


@dataclass(frozen=True)
class Example:
    """One prompt of a task. `question` is the raw problem text, before any template."""

    id: str
    question: str
    gold: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes model input.

    With a tokenizer that has a chat template (and `chat=True`), the system/user messages go through it and
    `assistant_prefix` is appended after the generation prompt. Otherwise `plain` is formatted directly.
    """

    user: str = "{question}"                 # user message; `{question}` and any meta field may appear
    system: str | None = None                # optional system message
    assistant_prefix: str = ""               # text the response is forced to start with (e.g. "<think>")
    plain: str = "{system}{user}\n"          # layout for tokenizers without a chat template
    chat: bool = True                        # use the tokenizer's chat template when it has one

    def render(self, example: Example, tokenizer: Any = None) -> str:
        fields = {**example.meta, "question": example.question}
        user = self.user.format(**fields)
        if self.chat and tokenizer is not None and getattr(tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": self.system}] if self.system else [])
            messages.append({"role": "user", "content": user})
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text + self.assistant_prefix
        system = f"{self.system}\n\n" if self.system else ""
        return self.plain.format(system=system, user=user) + self.assistant_prefix


@dataclass(frozen=True)
class WeightedVerifier:
    verifier: Verifier
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class Score:
    """All verdicts for one response; `reward` is the weighted sum, `status` the primary verifier's."""

    reward: float
    verdicts: dict[str, Verdict]
    primary: str

    @property
    def status(self) -> str:
        return self.verdicts[self.primary].status

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def answer(self) -> Any:
        """Parsed answer of the primary verifier (used for majority voting), or None."""
        return self.verdicts[self.primary].info.get("answer")


# A data source returns the raw records of one split; `limit` lets generated/huge sources stop early.
Loader = Callable[[str, int | None], list[Example]]


@dataclass
class Task:
    name: str
    loader: Loader
    verifiers: list[WeightedVerifier]
    template: PromptTemplate = PromptTemplate()
    primary: str | None = None               # verifier whose status decides correctness; default: first
    splits: tuple[str, ...] = ("test",)
    description: str = ""
    source: str = "builtin"
    sizes: dict[str, int] = field(default_factory=dict)  # split sizes known without loading (generated tasks)
    _cache: dict[tuple[str, int | None], list[Example]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.verifiers:
            raise ValueError(f"task {self.name!r}: needs at least one verifier")
        names = [w.name for w in self.verifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: duplicate verifier names {names}")
        if self.primary is None:
            self.primary = names[0]
        elif self.primary not in names:
            raise ValueError(f"task {self.name!r}: primary {self.primary!r} is not one of {names}")

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        key = (split, limit)
        if key not in self._cache:
            examples = self.loader(split, limit)
            self._cache[key] = examples[:limit] if limit is not None else examples
        return self._cache[key]

    def size(self, split: str) -> int:
        """Number of examples in `split`: from `sizes` when known (nothing generated), else by loading it."""
        return self.sizes[split] if split in self.sizes else len(self.load(split))

    def render(self, example: Example, tokenizer: Any = None) -> str:
        return self.template.render(example, tokenizer)

    def context(self, example: Example, *, truncated: bool = False, num_tokens: int | None = None,
                tokenizer: Any = None) -> VerifyContext:
        return VerifyContext(gold=example.gold, prompt=example.question, example=dict(example.meta),
                             truncated=truncated, num_tokens=num_tokens)

    def score(self, responses: Sequence[str], examples: Sequence[Example], *,
              truncated: Sequence[bool] | None = None, num_tokens: Sequence[int | None] | None = None,
              timeout: float = 5.0) -> list[Score]:
        """Verify every response with every verifier in the verifier process pool (hard deadlines)."""
        from verifiers.pool import run_batch

        if len(responses) != len(examples):
            raise ValueError(f"{len(responses)} responses for {len(examples)} examples")
        n = len(responses)
        truncated = truncated or [False] * n
        num_tokens = num_tokens or [None] * n
        contexts = [self.context(ex, truncated=tr, num_tokens=nt)
                    for ex, tr, nt in zip(examples, truncated, num_tokens)]
        # Model-based verifiers (reward models, PRMs) score the whole batch in one request to their server;
        # rule-based ones go through the pool, one deadline-guarded call each.
        batched = [w for w in self.verifiers if hasattr(w.verifier, "score_batch")]
        pooled = [w for w in self.verifiers if not hasattr(w.verifier, "score_batch")]
        flat = run_batch([(w.verifier, (resp, ctx)) for resp, ctx in zip(responses, contexts) for w in pooled],
                         timeout=timeout) if pooled else []
        by_verifier = {w.name: _score_batch(w.verifier, responses, contexts, timeout) for w in batched}
        scores, k = [], len(pooled)
        for i in range(n):
            got = {w.name: v for w, v in zip(pooled, flat[i * k:(i + 1) * k])}
            got.update({name: vs[i] for name, vs in by_verifier.items()})
            row = [got[w.name] for w in self.verifiers]
            by_name = {w.name: v for w, v in zip(self.verifiers, row)}
            reward = sum(w.weight * v.reward for w, v in zip(self.verifiers, row))
            scores.append(Score(reward=reward, verdicts=by_name, primary=self.primary))
        return scores


def _score_batch(verifier: Any, responses: Sequence[str], contexts: Sequence[VerifyContext],
                 timeout: float) -> list[Verdict]:
    """One batched call; a failure or a missed deadline (per-item timeout × ceil(n / 16)) is an `error`
    verdict for every item, never a raise or a hang."""
    if not responses:
        return []
    try:
        out = verifier.score_batch(responses, contexts, timeout=timeout * max(1, -(-len(responses) // 16)))
        if len(out) != len(responses):
            raise RuntimeError(f"{len(out)} verdicts for {len(responses)} responses")
        return list(out)
    except Exception as e:  # noqa: BLE001 (a broken scorer gives error verdicts; training goes on)
        return [Verdict("error", 0.0, {"reason": f"{type(e).__name__}: {e}"[:300]})] * len(responses)
