"""Process reward models as rewards: split a response into steps, score every step with a PRM, aggregate.

    steps  = split_steps(response, how)            newline | paragraph | step_k | separator (STEP_SPLITTERS)
    p_i    = PRM probability that step i is correct (see `rlvr.trainers.prm`)
    reward = aggregate([p_1..p_n], how)            min | prod | mean | last | sum (AGGREGATORS)

Two uses:
(a) an outcome reward: the `prm` verifier (one number per response; mixes with rule-based verifiers by weight
    in a Task, scored by a shared server process exactly like `reward_model`, see verifiers/reward_model.py);
(b) dense per-step rewards for GRPO/PPO: `dense_rewards` puts each step's score on the completion token that
    ends the step ([B, C] tensor, zeros elsewhere), computed in the trainer process with `PRMScorer`.

The PRM sees the steps re-joined with the separator it was trained with (saved in the model dir), so how a
policy lays out its steps and how the PRM was trained can differ.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["STEP_SPLITTERS", "AGGREGATORS", "split_steps", "step_spans", "aggregate", "PRMScorer",
           "step_end_tokens", "dense_rewards", "PRMVerifier"]

Span = tuple[int, int]      # [start, end) character offsets of one step in the response


# ----------------------------------------------------------------------------------------------------- steps
def _spans_between(text: str, pattern: str) -> list[Span]:
    """Spans of the non-blank pieces of `text` between matches of `pattern`, whitespace trimmed."""
    spans, start = [], 0
    for m in list(re.finditer(pattern, text)) + [None]:
        stop = m.start() if m is not None else len(text)
        piece = text[start:stop]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        if m is not None:
            start = m.end()
    return spans


def _step_k(text: str, separator: str | None = None) -> list[Span]:
    # A new step starts at each "Step k:" / "## Step k." marker at the start of a line; text before the first
    # marker is a step of its own when it is not blank.
    starts = [m.start() for m in re.finditer(r"(?im)^[ \t]*(?:#+[ \t]*)?step[ \t]*\d+[ \t]*[:.)]", text)]
    bounds = sorted(set([0] + starts)) + [len(text)]
    spans = []
    for a, b in zip(bounds, bounds[1:]):
        piece = text[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((a + lead, a + len(piece.rstrip())))
    return spans


def _separator(text: str, separator: str | None = None) -> list[Span]:
    if not separator:
        raise ValueError("split 'separator' needs a non-empty `separator` option")
    return _spans_between(text, re.escape(separator))


# name -> fn(text, separator) -> step spans
STEP_SPLITTERS: dict[str, Callable[[str, str | None], list[Span]]] = {
    "newline": lambda text, separator=None: _spans_between(text, r"\n"),
    "paragraph": lambda text, separator=None: _spans_between(text, r"\n[ \t]*\n"),
    "step_k": _step_k,
    "separator": _separator,
}


def step_spans(text: str, how: str = "newline", separator: str | None = None) -> list[Span]:
    """[start, end) character spans of the steps of `text` (blank steps dropped, whitespace trimmed)."""
    if how not in STEP_SPLITTERS:
        raise KeyError(f"unknown step split {how!r}; known: {', '.join(STEP_SPLITTERS)}")
    return STEP_SPLITTERS[how](text, separator)


def split_steps(text: str, how: str = "newline", separator: str | None = None) -> list[str]:
    """The steps of `text` as strings (see STEP_SPLITTERS)."""
    return [text[a:b] for a, b in step_spans(text, how, separator)]


# -------------------------------------------------------------------------------------------------- aggregate
_EPS = 1e-12


def _prod(p: Sequence[float]) -> float:
    return math.prod(p)


def _sum_log(p: Sequence[float]) -> float:
    return sum(math.log(max(_EPS, x)) for x in p)


# name -> fn(step probabilities) -> one score. All take probabilities in [0, 1].
AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,                                   # the weakest step (Lightman et al. 2023 use prod; min is common)
    "prod": _prod,                                # P(all steps correct) under independence
    "mean": lambda p: sum(p) / len(p),
    "last": lambda p: p[-1],                      # the PRM's view of the whole solution at its end
    "sum": _sum_log,                              # Σ log p_i = log prod (additive, better conditioned)
}


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One score from per-step probabilities: min | prod | mean | last | sum (sum = Σ log p_i, p clamped
    to >= 1e-12). An empty list is a ValueError (a response without steps has nothing to score)."""
    if how not in AGGREGATORS:
        raise KeyError(f"unknown aggregation {how!r}; known: {', '.join(AGGREGATORS)}")
    if len(step_scores) == 0:
        raise ValueError("aggregate needs at least one step score")
    return float(AGGREGATORS[how](list(step_scores)))


def as_probability(value: float, how: str) -> float:
    """An aggregated score on the probability scale (exp for `sum`, unchanged otherwise)."""
    return math.exp(value) if how == "sum" else value


# ----------------------------------------------------------------------------------------------------- scorer
class PRMScorer:
    """A trained PRM loaded once in this process.

    `step_probs(prompts, responses)` -> per response, P(step correct) for each of its steps (split with `split`;
    a response longer than the model's max_length loses its first steps' scores, see `encode_steps`).
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16, dtype: str = "float32",
                 split: str = "newline", separator: str | None = None, max_length: int | None = None):
        from rlvr.models.value_head import load_value_model

        if split not in STEP_SPLITTERS:
            raise KeyError(f"unknown step split {split!r}; known: {', '.join(STEP_SPLITTERS)}")
        self.model, self.tokenizer = load_value_model(model, dtype=dtype, expect_kind="prm")
        self.model.to(device).eval()
        self.sep = self.model.meta.get("step_separator", "\n")
        self.max_length = max_length or int(self.model.meta.get("max_length", 512))
        self.batch_size, self.split, self.separator = batch_size, split, separator

    def step_probs(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[float]]:
        steps = [split_steps(r, self.split, self.separator) for r in responses]
        return self.probs_of_steps(prompts, steps)

    def probs_of_steps(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Already-split steps -> probabilities (one forward per batch of `batch_size` responses)."""
        import torch

        from rlvr.trainers.prm import encode_steps, step_logits

        enc = [encode_steps(self.tokenizer, p, s, self.sep, self.max_length) for p, s in zip(prompts, steps)]
        out: list[list[float]] = [[] for _ in enc]
        todo = sorted((i for i in range(len(enc)) if enc[i][1]), key=lambda i: len(enc[i][0]))
        with torch.no_grad():
            for s in range(0, len(todo), self.batch_size):
                idx = todo[s:s + self.batch_size]
                logits = step_logits(self.model, [enc[i][0] for i in idx], [enc[i][1] for i in idx],
                                     self.tokenizer.pad_token_id)
                for i, lg in zip(idx, logits):
                    out[i] = torch.sigmoid(lg.float()).cpu().tolist()
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[float | None]:
        """Aggregated score per response (None for a response without steps)."""
        return [aggregate(p, how) if p else None for p in self.step_probs(prompts, responses)]

    def score_items(self, items: Sequence[tuple[str, str]]) -> list[list[float]]:
        """Server protocol (verifiers.reward_model): step probabilities per (prompt, response)."""
        return self.step_probs([p for p, _ in items], [r for _, r in items])


# ------------------------------------------------------------------------------------------------ dense rewards
def step_end_tokens(tokenizer: Any, completion_ids: Sequence[int], char_ends: Sequence[int]) -> list[int]:
    """Token index (into completion_ids) holding the last character of each step.

    Found by binary search on the decoded length of token prefixes (decode(ids[:t+1]) grows with t), so it is
    exact for any tokenizer whose decoding of a prefix is a prefix of the decoding, with O(log C) decodes per
    step. A step end past the decoded text maps to the last token.
    """
    ids = list(completion_ids)
    lengths: dict[int, int] = {}

    def decoded_len(t: int) -> int:
        if t not in lengths:
            lengths[t] = len(tokenizer.decode(ids[:t + 1], skip_special_tokens=True))
        return lengths[t]

    out = []
    for end in char_ends:                 # smallest t with decoded_len(t) >= end
        lo, hi = 0, len(ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_len(mid) >= end:
                hi = mid
            else:
                lo = mid + 1
        out.append(lo)
    return out


def dense_rewards(tokenizer: Any, completion_ids: Sequence[Sequence[int]], step_values: Sequence[Sequence[float]],
                  *, split: str = "newline", separator: str | None = None, length: int | None = None):
    """Per-token rewards [B, C] (float32 tensor): step j's value on the token that ends step j, 0 elsewhere.

    completion_ids: sampled token ids per response (no padding). step_values: per response, one value per step
    (e.g. PRM probabilities, or their differences); when fewer values than steps are given (a PRM truncated the
    first steps) they are aligned to the LAST steps. C = `length` or the longest completion.
    """
    import torch

    C = length if length is not None else max((len(c) for c in completion_ids), default=0)
    out = torch.zeros(len(completion_ids), max(1, C))
    for i, (ids, values) in enumerate(zip(completion_ids, step_values)):
        if not ids or not values:
            continue
        text = tokenizer.decode(list(ids), skip_special_tokens=True)
        spans = step_spans(text, split, separator)
        ends = step_end_tokens(tokenizer, ids, [b for _, b in spans])[-len(values):]
        for t, v in zip(ends, list(values)[-len(ends):]):
            if t < C:
                out[i, t] += float(v)
    return out


# --------------------------------------------------------------------------------------------------- verifier
@register_verifier("prm")
class PRMVerifier:
    """A PRM as an outcome verifier: reward = aggregate(step probabilities, `how`); status "correct" when the
    score on the probability scale (exp for `sum`) >= threshold; a response without steps is "unparseable".
    info: {"step_scores": [p_i], "score": aggregated}.

    Options: `model` (a dir written by `rlvr train-prm`), `how`, `split`, `separator`, `threshold`, `device`
    and `batch_size` of the shared scoring server (see verifiers/reward_model.py).
    """

    def __init__(self, model: str, how: str = "min", split: str = "newline", separator: str | None = None,
                 threshold: float = 0.5, device: str = "cpu", batch_size: int = 16) -> None:
        from verifiers.reward_model import shared_server

        if how not in AGGREGATORS:
            raise ValueError(f"bad options for verifier 'prm': how must be one of {', '.join(AGGREGATORS)}")
        if split not in STEP_SPLITTERS:
            raise ValueError(f"bad options for verifier 'prm': split must be one of {', '.join(STEP_SPLITTERS)}")
        server = shared_server("prm", model=model, device=device, batch_size=batch_size, split=split,
                               separator=separator)
        self.address, self.authkey = server.address, server.authkey      # all a worker needs (picklable)
        self.how, self.split, self.separator, self.threshold = how, split, separator, threshold

    def _verdict(self, probs: list[float]) -> Verdict:
        if not probs:
            return Verdict("unparseable", 0.0, {"step_scores": []})
        value = aggregate(probs, self.how)
        ok = as_probability(value, self.how) >= self.threshold
        return Verdict("correct" if ok else "wrong", value, {"step_scores": probs, "score": value})

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        from verifiers.reward_model import request_scores

        if not split_steps(response, self.split, self.separator):
            return Verdict("unparseable", 0.0, {"step_scores": []})
        try:
            [probs] = request_scores(self.address, self.authkey, [(ctx.prompt, response)])
        except Exception as e:  # noqa: BLE001 (server gone or failing: an error verdict, never a raise)
            return Verdict("error", 0.0, {"reason": f"{type(e).__name__}: {e}"[:300]})
        return self._verdict(probs)

    def score_batch(self, responses: Sequence[str], contexts: Sequence[VerifyContext],
                    timeout: float | None = None) -> list[Verdict]:
        """All items in one request (no pool): for trainers and best-of-N that already hold a batch. Responses
        without steps are `unparseable` without asking the server, as in `__call__`."""
        from verifiers.reward_model import request_scores

        has = [i for i, r in enumerate(responses) if split_steps(r, self.split, self.separator)]
        probs = request_scores(self.address, self.authkey, [(contexts[i].prompt, responses[i]) for i in has],
                               timeout=timeout) if has else []
        out = [Verdict("unparseable", 0.0, {"step_scores": []})] * len(responses)
        for i, p in zip(has, probs):
            out[i] = self._verdict(p)
        return out
