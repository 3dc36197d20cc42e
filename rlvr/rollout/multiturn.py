"""Multi-turn rollouts: a batch of dialogues, generated turn by turn with any `RolloutEngine`.

Each turn is one batched `generate` call for every unfinished dialogue (turn 0: one prompt per example with
n = G samples, so a group of G dialogues shares its first prompt; later turns: one prompt per dialogue, n = 1).
Every prompt after the first is the dialogue's exact token ids (prompt, model turns, env feedback so far), so
nothing is re-tokenised between turns and the trainer scores exactly the tokens that were sampled.

Per dialogue the result is one token sequence `prompt_ids + completion_ids`, where the completion holds the
model turns and the env's feedback in order, with a loss mask that is 1 only on model tokens, the sampler's
log-probs on those tokens (0 on env tokens) and the turn index of each model token (-1 on env tokens).

Token budget (the whole dialogue history is the state; `max_tokens` bounds its length). History is never cut
from the middle or the front: a trained token must see exactly the context it was sampled in. Instead:
  1. turn t may generate at most min(max_new_tokens, max_tokens - len(state)) tokens;
  2. feedback is appended only if the state then leaves room for at least one model token
     (len(state) + len(feedback) + 1 <= max_tokens); otherwise the dialogue ends there (end = "budget");
  3. a first prompt with no room for one model token is a DataError naming the example.
A dialogue ends when the env says done ("done"), after `max_turns` model turns ("max_turns"), or by rule 2.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rlvr.envs.base import Env, render_observation
from rlvr.errors import DataError
from rlvr.rollout.base import RolloutEngine, SamplingParams

__all__ = ["Dialogue", "rollout_dialogues", "turn_token_limit", "feedback_fits", "encode_prompt",
           "dialogue_metrics"]


@dataclass
class Dialogue:
    """One finished (or growing) dialogue. The per-token lists all have len(completion_ids) entries."""

    example: Any
    prompt_ids: list[int] = field(default_factory=list)      # first observation's tokens
    completion_ids: list[int] = field(default_factory=list)  # model turns and env feedback, in order
    loss_mask: list[int] = field(default_factory=list)       # 1 on model tokens, 0 on env tokens
    logprobs: list[float] = field(default_factory=list)      # sampler log-prob of model tokens, 0 on env tokens
    turn_ids: list[int] = field(default_factory=list)        # turn index of model tokens, -1 on env tokens
    turn_texts: list[str] = field(default_factory=list)      # decoded model text of each turn
    turn_rewards: list[float] = field(default_factory=list)  # r_t from the env
    turn_finish: list[str] = field(default_factory=list)     # the engine's finish reason of each turn
    turn_infos: list[dict] = field(default_factory=list)     # the env's info of each turn
    end: str = ""                                            # done | max_turns | budget

    @property
    def outcome(self) -> float:
        """R = Σ_t r_t."""
        return float(sum(self.turn_rewards))

    @property
    def num_turns(self) -> int:
        return len(self.turn_texts)

    @property
    def ids(self) -> list[int]:
        """The full token sequence: prompt, then every model turn and env feedback."""
        return self.prompt_ids + self.completion_ids

    @property
    def full_loss_mask(self) -> list[int]:
        """Loss mask over `ids` (0 on the prompt)."""
        return [0] * len(self.prompt_ids) + self.loss_mask

    def _add(self, ids: Sequence[int], *, model: bool, turn: int = -1, logprobs: Sequence[float] = ()) -> None:
        self.completion_ids += list(ids)
        self.loss_mask += [int(model)] * len(ids)
        self.logprobs += list(logprobs) if model else [0.0] * len(ids)
        self.turn_ids += [turn if model else -1] * len(ids)


def turn_token_limit(state_len: int, max_new_tokens: int, max_tokens: int) -> int:
    """Rule 1: tokens turn t may generate = min(max_new_tokens, max_tokens - state_len) (may be <= 0)."""
    return min(max_new_tokens, max_tokens - state_len)


def feedback_fits(state_len: int, feedback_len: int, max_tokens: int) -> bool:
    """Rule 2: feedback is appended only if state_len + feedback_len + 1 <= max_tokens."""
    return state_len + feedback_len + 1 <= max_tokens


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """A first prompt's ids, with the engines' BOS rule: special tokens are added unless the text already starts
    with the BOS token (chat templates write it)."""
    bos = getattr(tokenizer, "bos_token", None)
    return list(tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"])


def rollout_dialogues(engine: RolloutEngine, make_env: Callable[[], Env], examples: Sequence[Any],
                      params: SamplingParams, *, max_turns: int, max_tokens: int,
                      tokenizer: Any = None) -> list[list[Dialogue]]:
    """Run params.n dialogues per example for up to `max_turns` model turns; returns one list of n per example.

    `params` is used for every turn (its max_new_tokens is the per-turn budget, cut by the token budget rule;
    its seed, when set, is varied per turn so turns draw fresh noise).
    """
    tokenizer = tokenizer if tokenizer is not None else engine.tokenizer
    G = params.n
    envs = [[make_env() for _ in range(G)] for _ in examples]
    dialogues = [[Dialogue(ex) for _ in range(G)] for ex in examples]
    first_ids = [_first_prompt(group, ex, tokenizer, max_tokens) for group, ex in zip(envs, examples)]
    for d_group, ids in zip(dialogues, first_ids):
        for d in d_group:
            d.prompt_ids = list(ids)
    flat = [(d, e) for dg, eg in zip(dialogues, envs) for d, e in zip(dg, eg)]
    active = flat
    for turn in range(max_turns):
        if not active:
            break
        if turn == 0:     # one prompt per example, G samples each
            rollouts = [r for group in _generate(engine, first_ids, params, G, turn, max_tokens) for r in group]
        else:
            rollouts = [g[0] for g in _generate(engine, [d.ids for d, _ in active], params, 1, turn, max_tokens)]
        for (d, _), r in zip(active, rollouts):
            n = len(r.completion_ids)
            d._add(r.completion_ids, model=True, turn=turn, logprobs=(r.logprobs or [0.0] * n)[:n])
            d.turn_texts.append(r.text)
            d.turn_finish.append(r.finish_reason)
        results = _step_all(active, [r.text for r in rollouts])
        still = []
        for (d, env), res in zip(active, results):
            d.turn_rewards.append(float(res.reward))
            d.turn_infos.append(dict(res.info))
            if res.done:
                d.end = "done"
            elif turn + 1 >= max_turns:
                d.end = "max_turns"
            else:
                obs = "" if res.observation is None else render_observation(res.observation, tokenizer)
                fb = list(tokenizer(obs, add_special_tokens=False)["input_ids"]) if obs else []
                if feedback_fits(len(d.ids), len(fb), max_tokens):
                    d._add(fb, model=False)
                    still.append((d, env))
                else:
                    d.end = "budget"
        active = still
    return dialogues


def _first_prompt(envs: list[Env], example: Any, tokenizer: Any, max_tokens: int) -> list[int]:
    texts = [render_observation(e.reset(example), tokenizer, first=True) for e in envs]
    if len(set(texts)) != 1:
        raise ValueError(f"{type(envs[0]).__name__}.reset gave different first prompts for one example; "
                         "reset must depend on the example only")
    ids = encode_prompt(tokenizer, texts[0])
    if not feedback_fits(0, len(ids), max_tokens):
        ex_id = getattr(example, "id", "?")
        raise DataError(f"example {ex_id}: the first prompt has {len(ids)} tokens; grpo.env.max_tokens="
                        f"{max_tokens} leaves no room for an answer")
    return ids


def _generate(engine: RolloutEngine, prompts: list[list[int]], params: SamplingParams, n: int, turn: int,
              max_tokens: int):
    """engine.generate over token prompts, one call per distinct token limit (rule 1); results in prompt order."""
    by_limit: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(prompts):
        # Rule 1; the limit is >= 1 here because first prompts and feedback were admitted by rules 2 and 3.
        by_limit[turn_token_limit(len(ids), params.max_new_tokens, max_tokens)].append(i)
    out: list[Any] = [None] * len(prompts)
    for chunk, (limit, idx) in enumerate(sorted(by_limit.items())):
        seed = None if params.seed is None else params.seed + 104_729 * turn + 7_919 * chunk
        p = dataclasses.replace(params, n=n, max_new_tokens=limit,
                                min_new_tokens=min(params.min_new_tokens, limit), seed=seed)
        for i, group in zip(idx, engine.generate([prompts[i] for i in idx], p)):
            out[i] = group
    return out


def _step_all(active: list[tuple[Dialogue, Env]], texts: list[str]):
    """env.step for every active dialogue, batched per env class through `step_batch`; results in order."""
    by_cls: dict[type, list[int]] = defaultdict(list)
    for i, (_, env) in enumerate(active):
        by_cls[type(env)].append(i)
    out: list[Any] = [None] * len(active)
    for cls, idx in by_cls.items():
        for i, res in zip(idx, cls.step_batch([active[i][1] for i in idx], [texts[i] for i in idx])):
            out[i] = res
    return out


def dialogue_metrics(dialogues: Sequence[Dialogue], max_turns: int) -> dict[str, float]:
    """multiturn/* metrics over a batch of dialogues (kept or not)."""
    n = max(1, len(dialogues))
    m: dict[str, float] = {
        "multiturn/turns_mean": statistics.fmean(d.num_turns for d in dialogues) if dialogues else 0.0,
        "multiturn/tokens_mean": statistics.fmean(len(d.ids) for d in dialogues) if dialogues else 0.0,
        "multiturn/env_token_frac": (sum(len(d.loss_mask) - sum(d.loss_mask) for d in dialogues)
                                     / max(1, sum(len(d.loss_mask) for d in dialogues))),
    }
    for end in ("done", "max_turns", "budget"):
        m[f"multiturn/end_{end}"] = sum(d.end == end for d in dialogues) / n
    statuses = [[info.get("status") for info in d.turn_infos] for d in dialogues]
    if dialogues and all(s and s[-1] is not None for s in statuses):    # envs that report verifier statuses
        m["outcome/correct"] = sum("correct" in s for s in statuses) / n
    for t in range(max_turns):
        rs = [d.turn_rewards[t] for d in dialogues if d.num_turns > t]
        if rs:
            m[f"multiturn/reward_turn{t}"] = statistics.fmean(rs)
    return m
