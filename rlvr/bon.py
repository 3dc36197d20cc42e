"""Best-of-N reranking and test-time-compute scaling curves over n sampled responses per problem.

Selection methods (a method name is `majority`, `<scorer>` or `weighted_<scorer>`, scorer = `rm` | `prm`):
- majority       the most frequent parsed answer wins (ties: the one seen first); unparseable never wins;
                 the winner counts as correct if any of its members verified correct (as `rlvr.metrics`);
- <scorer>       best-of-N: the sample with the highest score (ties: the first);
- weighted_<s>   weighted voting: each answer's score is the sum of its samples' scores; the highest wins
                 (ties: the answer seen first) — Li et al. 2023 (arXiv:2206.02336), Uesato et al. 2022.
Scores are on a probability scale so they can be summed: σ(r) for an RM (same argmax as r), the aggregated
step probability for a PRM (exp of the log-sum for `sum`). pass@N (unbiased, Chen et al. 2021) is the ceiling.

Accuracy at budget N is the expectation over N-subsets of the n samples (kept in sample order, so ties break
the same way as on the full set): exact over all C(n, N) subsets when there are at most `max_subsets`, else
the mean over `max_subsets` seeded random subsets — the selection analogue of the unbiased pass@k estimator.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rlvr.errors import DataError, RLVRError
from rlvr.metrics import cluster_answers, pass_at_k

__all__ = ["ProblemSamples", "SELECTORS", "parse_method", "subsets", "accuracy_at", "scaling_curve",
           "format_table", "plot_scaling", "load_samples", "score_samples"]


@dataclass(frozen=True)
class ProblemSamples:
    """n samples of one problem, in sample order."""

    correct: tuple[bool, ...]
    answers: tuple[Any, ...]                                   # hashable parsed answers, None = unparseable
    scores: dict[str, tuple[float, ...]] = field(default_factory=dict)   # scorer -> per-sample score (NaN: none)

    @property
    def n(self) -> int:
        return len(self.correct)


# ------------------------------------------------------------------------------------------------ selectors
# Each selector scores a batch of subsets at once: idx [S, N] sample indices -> correct [S] (floats 0/1).
def _vote(p: ProblemSamples, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Winner per subset row by summed weight per answer cluster; ties -> the cluster seen first in the row."""
    labels = np.array([-1 if lab is None else lab for lab in cluster_answers(p.answers)])
    K = int(labels.max()) + 1 if len(labels) else 0
    S, N = idx.shape
    if K == 0:
        return np.zeros(S)
    lab, w, ok = labels[idx], weights[idx], np.asarray(p.correct)[idx]
    rows = np.broadcast_to(np.arange(S)[:, None], (S, N))
    pos = np.broadcast_to(np.arange(N)[None, :], (S, N))
    valid = lab >= 0
    W = np.zeros((S, K))
    first = np.full((S, K), N, dtype=np.int64)
    good = np.zeros((S, K), dtype=bool)
    np.add.at(W, (rows[valid], lab[valid]), w[valid])
    np.minimum.at(first, (rows[valid], lab[valid]), pos[valid])
    np.logical_or.at(good, (rows[valid], lab[valid]), ok[valid])
    present = first < N
    best = np.where(present, W, -np.inf).max(axis=1, keepdims=True)
    cand = present & (W >= best - 1e-12)
    winner = np.where(cand, first, N + 1).argmin(axis=1)
    return np.where(present.any(axis=1), good[np.arange(S), winner], False).astype(float)


def _majority(p: ProblemSamples, idx: np.ndarray, scorer: str | None) -> np.ndarray:
    return _vote(p, idx, np.ones(p.n))


def _best(p: ProblemSamples, idx: np.ndarray, scorer: str | None) -> np.ndarray:
    s = np.nan_to_num(np.asarray(p.scores[scorer], dtype=float), nan=-np.inf)[idx]   # no score: never preferred
    chosen = idx[np.arange(len(idx)), s.argmax(axis=1)]                              # argmax: first on ties
    return np.asarray(p.correct, dtype=float)[chosen]


def _weighted(p: ProblemSamples, idx: np.ndarray, scorer: str | None) -> np.ndarray:
    return _vote(p, idx, np.nan_to_num(np.asarray(p.scores[scorer], dtype=float), nan=0.0))


# name -> fn(problem, subset indices [S, N], scorer name or None) -> correct [S]
SELECTORS: dict[str, Callable[[ProblemSamples, np.ndarray, str | None], np.ndarray]] = {
    "majority": _majority, "best": _best, "weighted": _weighted}


def parse_method(name: str, scorers: Sequence[str] = ("rm", "prm")) -> tuple[str, str | None]:
    """`majority` -> ("majority", None); `prm` -> ("best", "prm"); `weighted_rm` -> ("weighted", "rm")."""
    if name == "majority":
        return "majority", None
    if name in scorers:
        return "best", name
    if name.startswith("weighted_") and name[len("weighted_"):] in scorers:
        return "weighted", name[len("weighted_"):]
    known = ["majority", *scorers, *(f"weighted_{s}" for s in scorers)]
    raise RLVRError(f"unknown rerank method {name!r}; known: {', '.join(known)}")


def subsets(n: int, N: int, max_subsets: int, rng: random.Random) -> np.ndarray:
    """N-subsets of range(n) in sample order [S, N]: all C(n, N) when <= max_subsets, else random ones."""
    if math.comb(n, N) <= max_subsets:
        return np.array(list(itertools.combinations(range(n), N)), dtype=np.int64).reshape(-1, N)
    return np.array([sorted(rng.sample(range(n), N)) for _ in range(max_subsets)], dtype=np.int64)


def accuracy_at(problems: Sequence[ProblemSamples], N: int, methods: Sequence[str], *, max_subsets: int = 256,
                seed: int = 0) -> dict[str, float]:
    """Mean over problems of each method's expected accuracy at budget N, plus `pass@N` (the ceiling)."""
    rng = random.Random(seed * 1_000_003 + N)
    parsed = {m: parse_method(m) for m in methods}
    totals = {m: 0.0 for m in methods}
    ceiling = 0.0
    for p in problems:
        if N > p.n:
            raise RLVRError(f"budget N={N} exceeds the {p.n} samples of a problem")
        idx = subsets(p.n, N, max_subsets, rng)
        for m, (sel, scorer) in parsed.items():
            if scorer is not None and scorer not in p.scores:
                raise RLVRError(f"method {m!r} needs {scorer} scores (give --{scorer} MODEL)")
            totals[m] += float(SELECTORS[sel](p, idx, scorer).mean())
        ceiling += pass_at_k(p.n, sum(p.correct), N)
    out = {"pass@N": ceiling / len(problems)}
    out.update({m: v / len(problems) for m, v in totals.items()})
    return out


def scaling_curve(problems: Sequence[ProblemSamples], ns: Sequence[int], methods: Sequence[str], *,
                  max_subsets: int = 256, seed: int = 0) -> dict[str, list[float]]:
    """{"N": ns, "pass@N": [...], method: [...]} — accuracy vs sample budget for every method."""
    if not problems:
        raise DataError("no problems to rerank")
    curve: dict[str, list[float]] = {"N": [int(n) for n in ns]}
    for N in ns:
        for k, v in accuracy_at(problems, int(N), methods, max_subsets=max_subsets, seed=seed).items():
            curve.setdefault(k, []).append(v)
    return curve


def format_table(curve: dict[str, list[float]]) -> str:
    """Plain-text table: one row per N, one column per method."""
    cols = [k for k in curve if k != "N"]
    head = f"{'N':>5}  " + "  ".join(f"{c:>12}" for c in cols)
    rows = [f"{n:>5}  " + "  ".join(f"{curve[c][i]:>12.4f}" for c in cols) for i, n in enumerate(curve["N"])]
    return "\n".join([head, *rows])


def plot_scaling(curve: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Accuracy vs N (log2 x-axis) for every method; pass@N dashed as the ceiling. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, ys in curve.items():
        if k != "N":
            ax.plot(curve["N"], ys, marker="o", label=k, linestyle="--" if k == "pass@N" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve["N"], [str(n) for n in curve["N"]])
    ax.set_xlabel("samples per problem (N)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------------- samples
def _hashable(a: Any) -> Any:
    if a is None:
        return None
    try:
        hash(a)
        return a
    except TypeError:
        return json.dumps(a, sort_keys=True, default=str)


def load_samples(path: str | Path) -> list[list[dict[str, Any]]]:
    """`samples.jsonl` as written by `rlvr eval` -> records grouped by problem id, in sample order.

    Every problem must have the same number of samples (a DataError names the first that differs).
    """
    from rlvr.trainers.reward_model import read_jsonl_any

    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for lineno, rec in read_jsonl_any(path):
        missing = [k for k in ("id", "response", "status") if k not in rec]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        groups.setdefault(str(rec["id"]), []).append(rec)
    out = [sorted(g, key=lambda r: r.get("sample", 0)) for g in groups.values()]
    if not out:
        raise DataError(f"{path}: no samples")
    sizes = {len(g) for g in out}
    if len(sizes) > 1:
        bad = next(g for g in out if len(g) != len(out[0]))
        raise DataError(f"{path}: problem {bad[0]['id']!r} has {len(bad)} samples, others {len(out[0])}")
    return out


def score_samples(groups: list[list[dict[str, Any]]],
                  scorers: dict[str, Callable[[list[str], list[str]], list[float | None]]]) -> list[ProblemSamples]:
    """Run every scorer over all responses in one batched call each; build ProblemSamples.

    A scorer maps (prompts, responses) -> probability-scale scores (None: nothing to score, stored as NaN).
    """
    flat = [r for g in groups for r in g]
    prompts, responses = [r.get("prompt", "") for r in flat], [r["response"] for r in flat]
    all_scores = {name: [math.nan if s is None else float(s) for s in fn(prompts, responses)]
                  for name, fn in scorers.items()}
    out, pos = [], 0
    for g in groups:
        out.append(ProblemSamples(correct=tuple(r["status"] == "correct" for r in g),
                                  answers=tuple(_hashable(r.get("answer")) for r in g),
                                  scores={k: tuple(v[pos:pos + len(g)]) for k, v in all_scores.items()}))
        pos += len(g)
    return out


def build_scorers(methods: Sequence[str], *, rm: str | None = None, prm: str | None = None,
                  prm_how: str = "min", prm_split: str = "newline", prm_separator: str | None = None,
                  device: str = "cpu", batch_size: int = 16) -> dict[str, Callable]:
    """In-process scorers needed by `methods` (each model loaded once), as probability-scale functions."""
    needed = {scorer for m in methods for _, scorer in [parse_method(m)] if scorer is not None}
    scorers: dict[str, Callable] = {}
    if "rm" in needed:
        if rm is None:
            raise RLVRError("methods rm / weighted_rm need a reward model (--rm PATH)")
        from verifiers.reward_model import RewardModelScorer

        rm_scorer = RewardModelScorer(rm, device=device, batch_size=batch_size)
        scorers["rm"] = lambda p, r: [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, v)))) for v in rm_scorer.score(p, r)]
    if "prm" in needed:
        if prm is None:
            raise RLVRError("methods prm / weighted_prm need a process reward model (--prm PATH)")
        from verifiers.prm import PRMScorer, as_probability

        prm_scorer = PRMScorer(prm, device=device, batch_size=batch_size, split=prm_split, separator=prm_separator)
        scorers["prm"] = lambda p, r: [None if v is None else as_probability(v, prm_how)
                                       for v in prm_scorer.score(p, r, how=prm_how)]
    return scorers


def run_bon(samples_path: str | Path, out_dir: str | Path, methods: Sequence[str], ns: Sequence[int], *,
            max_subsets: int = 256, seed: int = 0, **scorer_options: Any) -> dict[str, Any]:
    """Rerank the samples of an `rlvr eval` run: writes bon.json, scores.jsonl and scaling.png into out_dir.

    scorer_options: `rm`, `prm`, `prm_how`, `prm_split`, `prm_separator`, `device`, `batch_size`
    (see `build_scorers`). Returns {"curve", "methods", "n", "num_problems", "files"}.
    """
    from rlvr.trainers.checkpoint import atomic_write_json, atomic_write_text

    for m in methods:
        parse_method(m)
    groups = load_samples(samples_path)
    n = len(groups[0])
    bad = [N for N in ns if not 1 <= N <= n]
    if bad:
        raise RLVRError(f"--scaling: N={bad[0]} must be between 1 and the {n} samples per problem")
    problems = score_samples(groups, build_scorers(methods, **scorer_options))
    curve = scaling_curve(problems, sorted(set(ns)), methods, max_subsets=max_subsets, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.jsonl", "".join(
        json.dumps({"id": r["id"], "sample": r.get("sample", j), "correct": ok, "scores": {
            k: (None if math.isnan(v[j]) else v[j]) for k, v in p.scores.items()}}) + "\n"
        for g, p in zip(groups, problems) for j, (r, ok) in enumerate(zip(g, p.correct))))
    plot_scaling(curve, out / "scaling.png", title=f"{len(problems)} problems, n={n}")
    result = {"curve": curve, "methods": list(methods), "n": n, "num_problems": len(problems),
              "files": {"table": str(out / "bon.json"), "plot": str(out / "scaling.png"),
                        "scores": str(out / "scores.jsonl")}}
    atomic_write_json(out / "bon.json", result)
    return result

