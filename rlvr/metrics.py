"""Evaluation metrics over n sampled responses per problem: pass@k, pass^k, maj@k and confidence intervals.

Each estimator is a small pure function whose formula is in its docstring. Notation, per problem:
n = samples drawn, c = samples verified correct, k = the budget being scored (k <= n).

- pass@k  (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", https://arxiv.org/abs/2107.03374):
  probability that at least one of k samples drawn without replacement from the n is correct.
- pass^k  (Yao et al. 2024, tau-bench, https://arxiv.org/abs/2406.12045): probability that all k are correct.
- maj@k   (self-consistency, Wang et al. 2022, https://arxiv.org/abs/2203.11171): majority vote over the parsed
  answers of k samples; scores 1 when the winning answer is correct.

Dataset-level numbers are means over problems; `summarize` adds a seeded bootstrap CI over problems for every
metric and a Wilson interval for the pooled per-sample accuracy.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "pass_at_k", "pass_hat_k", "cluster_answers", "majority_vote", "maj_at_k", "maj_at_k_expected",
    "bootstrap_ci", "wilson_interval", "ProblemOutcome", "summarize",
]

Equivalent = Callable[[Any, Any], bool]


def _check_nck(n: int, c: int, k: int) -> None:
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise ValueError(f"n, c, k must be integers, got n={n!r} c={c!r} k={k!r}")
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n} k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n} c={c}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator for one problem (Chen et al. 2021, eq. 1).

        pass@k = 1 - C(n-c, k) / C(n, k)
               = 1 - prod_{i=n-c+1}^{n} (1 - k / i)        (numerically stable product form)

    and pass@k = 1 when n - c < k (every k-subset must contain a correct sample).
    """
    _check_nck(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k estimator for one problem: probability that all k samples drawn without replacement are
    correct.

        pass^k = C(c, k) / C(n, k) = prod_{i=0}^{k-1} (c - i) / (n - i)      (0 when c < k)
    """
    _check_nck(n, c, k)
    if c < k:
        return 0.0
    return float(np.prod((c - np.arange(k)) / (n - np.arange(k))))


def cluster_answers(answers: Sequence[Any], equivalent: Equivalent | None = None) -> list[int | None]:
    """Label each answer with a cluster id (None stays None = unparseable).

    Without `equivalent`, answers are clustered by equality (hash when hashable, else ==). With it, clustering is
    greedy in sample order: an answer joins the first existing cluster whose representative (first member)
    satisfies `equivalent(representative, answer)`, else it starts a new cluster. Ids are assigned in order of
    first appearance, so a lower id means the cluster appeared earlier.
    """
    labels: list[int | None] = []
    reps: list[Any] = []
    by_hash: dict[Any, int] = {}          # fast path for plain equality on hashable answers
    eq = equivalent or (lambda x, y: x == y)
    for a in answers:
        if a is None:
            labels.append(None)
            continue
        key = _hash_key(a) if equivalent is None else None
        label = by_hash.get(key) if key is not None else None
        if label is None:
            label = next((i for i, r in enumerate(reps) if _safe_eq(eq, r, a)), None)
        if label is None:
            label = len(reps)
            reps.append(a)
        if key is not None:
            by_hash.setdefault(key, label)
        labels.append(label)
    return labels


def _hash_key(a: Any) -> Any:
    try:
        hash(a)
    except TypeError:
        return None
    return (type(a).__name__, a)


def _safe_eq(eq: Equivalent, a: Any, b: Any) -> bool:
    # A comparison that raises (e.g. on odd parsed objects) means "not equivalent", never a crash.
    try:
        return bool(eq(a, b))
    except Exception:
        return False


def majority_vote(labels: Sequence[int | None], correct: Sequence[bool]) -> float:
    """Score one vote over already-clustered samples: 1.0 if the winning cluster is correct, else 0.0.

    The winner is the non-None cluster with the most members; ties go to the cluster that appears first in
    sample order (the lowest label from `cluster_answers`). Unparseable samples (None) never win; a vote where
    every sample is None has no answer and scores 0. A cluster is correct if any of its members was verified
    correct (so one verifier timeout does not flip an otherwise correct answer).
    """
    counts: dict[int, int] = {}
    first_pos: dict[int, int] = {}
    for pos, label in enumerate(labels):
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
            first_pos.setdefault(label, pos)
    if not counts:
        return 0.0
    winner = min(counts, key=lambda lab: (-counts[lab], first_pos[lab]))
    return float(any(ok for lab, ok in zip(labels, correct) if lab == winner))


def maj_at_k(answers: Sequence[Any], correct: Sequence[bool], k: int,
             equivalent: Equivalent | None = None) -> float:
    """maj@k over the FIRST k samples: majority vote of `answers[:k]`, 1.0 if the winner is correct.

    answers: parsed answer per sample (None = unparseable); correct: verifier outcome per sample. Ties: the
    answer seen first among the k wins (see `majority_vote`). Equivalence: `equivalent(a, b)` when given,
    else equality (see `cluster_answers`). For a lower-variance estimate see `maj_at_k_expected`.
    """
    _check_votes(answers, correct, k)
    return majority_vote(cluster_answers(list(answers[:k]), equivalent), correct[:k])


def maj_at_k_expected(answers: Sequence[Any], correct: Sequence[bool], k: int,
                      equivalent: Equivalent | None = None, *, max_subsets: int = 2000,
                      seed: int = 0) -> float:
    """Expected maj@k over k-subsets of the n samples (the maj@k analogue of the unbiased pass@k estimator).

        maj@k_avg = mean over S in subsets(n, k) of majority_vote(S)

    Exact (all C(n, k) subsets, kept in sample order so ties break the same way) when C(n, k) <= max_subsets;
    otherwise the mean over `max_subsets` uniformly random subsets drawn with a `seed`ed RNG. Clusters are
    formed once over all n answers, so a subset's vote uses the same equivalence classes as the full set.
    """
    _check_votes(answers, correct, k)
    n = len(answers)
    labels = cluster_answers(list(answers), equivalent)
    if math.comb(n, k) <= max_subsets:
        subsets = itertools.combinations(range(n), k)
    else:
        rng = random.Random(seed)
        subsets = (sorted(rng.sample(range(n), k)) for _ in range(max_subsets))
    votes = [majority_vote([labels[i] for i in s], [correct[i] for i in s]) for s in subsets]
    return float(np.mean(votes))


def _check_votes(answers: Sequence[Any], correct: Sequence[bool], k: int) -> None:
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    if not 1 <= k <= len(answers):
        raise ValueError(f"need 1 <= k <= n, got n={len(answers)} k={k}")


def bootstrap_ci(scores: Sequence[float], *, confidence: float = 0.95, num_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI for the mean of per-problem scores (problems resampled with replacement).

        means_b = mean(scores[idx_b]),  idx_b ~ Uniform{0..P-1}^P,  b = 1..B
        CI = (quantile(means, (1-confidence)/2), quantile(means, (1+confidence)/2))

    Seeded, so the same scores always give the same interval. One problem gives a zero-width interval.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one score")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(num_resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p = successes / trials, with z = Phi^-1((1+conf)/2):

        center = (p + z^2 / 2t) / (1 + z^2 / t),  half = z / (1 + z^2 / t) * sqrt(p (1-p) / t + z^2 / 4t^2)

    Treats every sample as independent, so across problems it is narrower than the bootstrap CI.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    z = NormalDist().inv_cdf((1.0 + confidence) / 2)
    p, t = successes / trials, trials
    denom = 1.0 + z * z / t
    center = (p + z * z / (2 * t)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / t + z * z / (4 * t * t))
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class ProblemOutcome:
    """All samples of one problem, in sample order: verifier outcome and (optionally) parsed answer."""

    correct: tuple[bool, ...]
    answers: tuple[Any, ...] | None = None     # None: no answers known, maj@k is not computed

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def c(self) -> int:
        return sum(bool(x) for x in self.correct)

    @classmethod
    def from_counts(cls, n: int, c: int) -> "ProblemOutcome":
        """Counts only (no answers, sample order unknown): enough for pass@k and pass^k."""
        _check_nck(n, c, 1)
        return cls(correct=(True,) * c + (False,) * (n - c))


def summarize(per_problem_counts: Sequence[ProblemOutcome], ks: Sequence[int], *,
              equivalent: Equivalent | None = None, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Dataset metrics: for every k, the mean over problems of pass@k, pass^k and (when answers are known)
    maj@k (first k samples) and maj@k_avg (expected over k-subsets), each as {"value", "ci": [lo, hi]} with a
    seeded bootstrap CI over problems. Also "accuracy": pooled per-sample accuracy with a Wilson interval.
    """
    problems = list(per_problem_counts)
    if not problems:
        raise ValueError("summarize needs at least one problem")
    n_min = min(p.n for p in problems)
    bad = [k for k in ks if not 1 <= k <= n_min]
    if bad:
        raise ValueError(f"k={bad[0]} is outside 1..n (n={n_min} samples per problem)")
    with_answers = all(p.answers is not None for p in problems)
    per_metric: dict[str, list[float]] = {}
    for k in ks:
        per_metric[f"pass@{k}"] = [pass_at_k(p.n, p.c, k) for p in problems]
        per_metric[f"pass^{k}"] = [pass_hat_k(p.n, p.c, k) for p in problems]
        if with_answers:
            per_metric[f"maj@{k}"] = [maj_at_k(p.answers, p.correct, k, equivalent) for p in problems]
            per_metric[f"maj@{k}_avg"] = [maj_at_k_expected(p.answers, p.correct, k, equivalent, seed=seed)
                                          for p in problems]
    out: dict[str, Any] = {"num_problems": len(problems), "samples_per_problem": n_min,
                           "confidence": confidence}
    for name, scores in per_metric.items():
        lo, hi = bootstrap_ci(scores, confidence=confidence, seed=seed)
        out[name] = {"value": float(np.mean(scores)), "ci": [lo, hi]}
    total, hits = sum(p.n for p in problems), sum(p.c for p in problems)
    out["accuracy"] = {"value": hits / total, "ci": list(wilson_interval(hits, total, confidence=confidence))}
    return out
