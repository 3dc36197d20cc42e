"""Evaluate a policy on a task: sample n responses per problem, verify them, report pass@k / pass^k / maj@k.

    evaluate(task, engine, n=16, ks=(1, 4, 16), ...) -> metrics dict (also written to out_dir/metrics.json)

Flow: render prompts (`task.render`) -> `engine.generate` (n per prompt, chunked so a progress bar moves) ->
`task.score` (verifier process pool, with truncation flags and token counts) -> per-problem correct counts ->
`rlvr.metrics.summarize`. Majority voting uses `Score.answer`, the primary verifier's parsed answer.
Files are written atomically (temp file + os.replace), so a crashed run never leaves a half-written metrics.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rlvr.errors import DataError, RLVRError
from rlvr.metrics import ProblemOutcome, summarize
from rlvr.rollout.base import Rollout, RolloutEngine, SamplingParams
from verifiers.base import STATUSES

__all__ = ["evaluate", "greedy_pass_at_1", "check_ks"]


def check_ks(ks: Sequence[int], n: int) -> list[int]:
    """Sorted unique ks, each in 1..n; otherwise an RLVRError naming the bad k."""
    if n < 1:
        raise RLVRError(f"n must be >= 1, got {n}")
    for k in ks:
        if not 1 <= k <= n:
            raise RLVRError(f"k={k} must be between 1 and n={n} (pass@k needs at least k samples per problem)")
    return sorted(set(int(k) for k in ks))


def evaluate(task: Any, engine: RolloutEngine, *, n: int = 1, ks: Sequence[int] = (1,), split: str = "test",
             limit: int | None = None, temperature: float = 1.0, max_new_tokens: int = 256,
             out_dir: str | Path | None = None, tokenizer: Any = None, timeout: float = 5.0,
             top_p: float = 1.0, seed: int | None = 0, stop: Sequence[str] = (), batch_prompts: int = 64,
             equivalent: Callable[[Any, Any], bool] | None = None, progress: bool = True) -> dict[str, Any]:
    """Sample `n` responses for each of the first `limit` problems of `split`, verify, and summarise.

    task: a Task or a registered task name. tokenizer: for prompt rendering (default: `engine.tokenizer`).
    timeout: per-verification deadline in seconds. seed: chunk i samples with seed + i (None = unseeded).
    Returns the metrics dict; with `out_dir`, also writes `metrics.json` and `samples.jsonl` there.
    """
    ks = check_ks(ks, n)
    if isinstance(task, str):
        from tasks.registry import get_task
        task = get_task(task)
    if split not in task.splits:
        raise RLVRError(f"task {task.name!r} has no split {split!r}; splits: {', '.join(task.splits)}")
    tokenizer = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
    examples = task.load(split, limit)
    if not examples:
        raise DataError(f"task {task.name!r} split {split!r} has no examples")
    prompts = [task.render(ex, tokenizer) for ex in examples]
    base = dict(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, stop=tuple(stop))

    rollouts: list[list[Rollout]] = []
    scores: list[list[Any]] = []
    t_gen = t_ver = 0.0
    with _progress_bar(progress, f"eval {task.name}", len(examples)) as advance:
        for i, start in enumerate(range(0, len(examples), batch_prompts)):
            chunk = slice(start, start + batch_prompts)
            params = SamplingParams(**base, seed=None if seed is None else seed + i)
            t0 = time.perf_counter()
            groups = engine.generate(prompts[chunk], params)
            t1 = time.perf_counter()
            scores.extend(_score_groups(task, examples[chunk], groups, timeout))
            t_gen, t_ver = t_gen + t1 - t0, t_ver + time.perf_counter() - t1
            rollouts.extend(groups)
            advance(len(groups))

    metrics = _metrics(rollouts, scores, ks, equivalent, seed or 0)
    metrics.update(task=task.name, split=split, n=n, ks=ks, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_new_tokens, seed=seed)
    metrics["time/generate_s"], metrics["time/verify_s"] = round(t_gen, 3), round(t_ver, 3)
    total_tokens = sum(r.num_tokens for g in rollouts for r in g)
    metrics["perf/tokens_per_s"] = round(total_tokens / t_gen, 1) if t_gen > 0 else None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "samples.jsonl", "".join(   # samples first: metrics.json marks a finished run
            json.dumps(rec, default=str) + "\n" for rec in _sample_records(examples, prompts, rollouts, scores)))
        _write_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
        metrics["out_dir"] = str(out)
    return metrics


def greedy_pass_at_1(task: Any, engine: RolloutEngine, *, split: str = "test", limit: int | None = None,
                     max_new_tokens: int = 256, tokenizer: Any = None, timeout: float = 5.0,
                     out_dir: str | Path | None = None, progress: bool = False) -> float:
    """Fraction of problems whose greedy (temperature 0) response verifies correct: the trainers' eval number."""
    # One generate call for all prompts (the engine chunks by its own batch limit): greedy evals run every few
    # training steps, and 64-prompt chunks (the progress-bar granularity) cost ~2x in per-step overhead.
    metrics = evaluate(task, engine, n=1, ks=(1,), split=split, limit=limit, temperature=0.0,
                       max_new_tokens=max_new_tokens, out_dir=out_dir, tokenizer=tokenizer, timeout=timeout,
                       progress=progress, batch_prompts=1 << 20)
    return metrics["pass@1"]["value"]


def _score_groups(task: Any, examples: Sequence[Any], groups: list[list[Rollout]], timeout: float) -> list[list]:
    """Verify every rollout of every group in one pool batch; returns scores grouped like `groups`."""
    flat = [(ex, r) for ex, group in zip(examples, groups) for r in group]
    flat_scores = task.score([r.text for _, r in flat], [ex for ex, _ in flat],
                             truncated=[r.truncated for _, r in flat],
                             num_tokens=[r.num_tokens for _, r in flat], timeout=timeout)
    out, pos = [], 0
    for group in groups:
        out.append(flat_scores[pos:pos + len(group)])
        pos += len(group)
    return out


def _metrics(rollouts: list[list[Rollout]], scores: list[list[Any]], ks: list[int], equivalent: Callable | None,
             seed: int) -> dict[str, Any]:
    # maj@k needs parsed answers; a verifier that never reports one (e.g. code tests) gets no maj@k rows.
    has_answers = any(s.answer is not None for group in scores for s in group)
    outcomes = [ProblemOutcome(correct=tuple(s.correct for s in group),
                               answers=tuple(_hashable(s.answer) for s in group) if has_answers else None)
                for group in scores]
    metrics = summarize(outcomes, ks, equivalent=equivalent, seed=seed)
    statuses = Counter(s.status for group in scores for s in group)
    finishes = Counter(r.finish_reason for group in rollouts for r in group)
    lengths = [r.num_tokens for group in rollouts for r in group]
    metrics["outcomes"] = {status: statuses.get(status, 0) for status in STATUSES}
    metrics["finish_reasons"] = dict(finishes)
    metrics["num_samples"] = len(lengths)
    metrics["mean_response_tokens"] = sum(lengths) / len(lengths)
    metrics["mean_response_chars"] = sum(len(r.text) for g in rollouts for r in g) / len(lengths)
    metrics["truncated_frac"] = finishes.get("length", 0) / len(lengths)
    metrics["mean_reward"] = sum(s.reward for g in scores for s in g) / len(lengths)
    return metrics


def _hashable(answer: Any) -> Any:
    # Parsed answers come back from worker processes; lists/dicts are voted on by their canonical JSON text.
    if answer is None:
        return None
    try:
        hash(answer)
        return answer
    except TypeError:
        return json.dumps(answer, sort_keys=True, default=str)


def _sample_records(examples, prompts, rollouts, scores):
    for ex, prompt, group, group_scores in zip(examples, prompts, rollouts, scores):
        for j, (r, s) in enumerate(zip(group, group_scores)):
            yield {"id": ex.id, "sample": j, "prompt": prompt, "gold": ex.gold, "response": r.text,
                   "status": s.status, "reward": s.reward, "answer": s.answer,
                   "finish_reason": r.finish_reason, "num_tokens": r.num_tokens,
                   "verdicts": {name: v.to_dict() for name, v in s.verdicts.items()}}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _progress_bar(enabled: bool, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """`with _progress_bar(on, label, total) as advance: advance(k)` -- a rich bar, or nothing when off."""
    if not enabled:
        yield lambda k: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task_id = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task_id, k)


def multiturn_greedy_eval(task: Any, engine: RolloutEngine, env: Any, *, split: str = "test",
                          limit: int | None = None, max_new_tokens: int = 256, tokenizer: Any = None
                          ) -> dict[str, float]:
    """Greedy dialogues with an environment (`env`: a MultiTurnConfig, e.g. arithmetic_retry): the share of
    problems solved within t model turns, t = 1..max_turns, and the mean turns used.

    A problem counts as solved at the first turn whose env info reports status "correct" (envs that report no
    statuses: a positive turn reward). `multiturn_pass@1_turn1` is the first answer alone, the single-turn number
    under the env's first prompt; `multiturn_pass@1` is solved within max_turns.
    """
    from rlvr.envs.base import make_env
    from rlvr.rollout.multiturn import rollout_dialogues

    tokenizer = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
    examples = task.load(split, limit)
    if not examples:
        raise DataError(f"task {task.name!r} split {split!r} has no examples")
    factory = make_env(env.name, task=task, tokenizer=tokenizer, max_turns=env.max_turns, options=env.options)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    dialogues = [g[0] for g in rollout_dialogues(engine, factory, examples, params, max_turns=env.max_turns,
                                                 max_tokens=env.max_tokens, tokenizer=tokenizer)]
    first = [solved_turn(d) for d in dialogues]
    out = {f"multiturn_pass@1_turn{t + 1}": sum(f is not None and f <= t for f in first) / len(first)
           for t in range(env.max_turns)}
    out["multiturn_pass@1"] = out[f"multiturn_pass@1_turn{env.max_turns}"]
    out["multiturn_turns_mean"] = sum(d.num_turns for d in dialogues) / len(dialogues)
    return out


def solved_turn(dialogue: Any) -> int | None:
    """Index of the first turn that solved the problem (status "correct", else reward > 0), or None."""
    for t, (info, reward) in enumerate(zip(dialogue.turn_infos, dialogue.turn_rewards)):
        status = info.get("status")
        if status == "correct" or (status is None and reward > 0):
            return t
    return None
