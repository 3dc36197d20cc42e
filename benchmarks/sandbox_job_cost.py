"""CPU per sandboxed job: this tree's `sandbox` package, or side by side with the one of a git revision.

    python benchmarks/sandbox_job_cost.py [--base-rev REV] [--rounds 3] [--workload mbpp|trivial] [--limit N]

Runs the code verifier's jobs (its harness as the prelude + the call) one after another on one warm worker
(bubblewrap etc. as the machine allows) and reports, per job: CPU time of everything involved (this process +
the zygote + the job's processes, the zygote's start-up included), page faults in the sandbox processes, and
wall time. Workloads: `mbpp` = the 973 MBPP reference solutions other than mbpp/123 (a genuine 6.3 s reference
that only measures the timeout), `trivial` = one tiny function and one assert, repeated as often.

With `--base-rev`, the revision's `sandbox/` (from `git archive`) and this tree's run at the same time, each in
its own process with one worker, `--rounds` times (which one starts first alternates): both see the same load
from whatever else runs on the machine, which a comparison of separate runs on a shared box does not give.
Identical trees measured so differ by a few percent per round (`--base-rev HEAD` on a clean tree shows it). Tasks, verifier and the jobs always
come from this tree. CPU time is less sensitive to load than wall time but not immune (shared caches, frequency);
the page-fault counts are nearly deterministic.

Last line: {"cpu_ms": ..., "faults": ..., "base_cpu_ms": ..., "base_faults": ..., "cpu_ratio": ...} (base_* and
cpu_ratio only with --base-rev).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLOW_REFERENCE = "mbpp/123"         # runs into any sensible timeout (see docs/sandbox.md)


def build_jobs(workload: str, limit: int | None) -> list:
    import tasks.builtin.code_tasks  # noqa: F401  (registers mbpp)
    from sandbox import Job
    from tasks.registry import get_task
    from verifiers.code import harness_parts

    examples = [ex for ex in get_task("mbpp").load("full") if ex.id != SLOW_REFERENCE][:limit]
    jobs = []
    for i, ex in enumerate(examples):
        if workload == "trivial":
            code, tests, setup = "def f(x):\n    return x\n", ["assert f(1) == 1"], ""
        else:
            code, tests, setup = ex.meta["reference"], ex.meta["tests"], ex.meta["test_setup"]
        harness, call = harness_parts(code, tests, setup=setup, tag=f"RLVR-TESTS-cost{i}", stop_first=True)
        jobs.append(Job(call, prelude=harness, timeout_s=3.0))
    return jobs


def measure(workload: str, limit: int | None) -> dict:
    """One run in this process with the `sandbox` package first on sys.path (set up by `child`)."""
    from sandbox.local import LocalBackend, LocalOptions

    jobs = build_jobs(workload, limit)
    kids0, self0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    backend = LocalBackend(LocalOptions(workers=1))
    start = getattr(backend, "start_workers", backend.layers)   # older trees have no start_workers
    start()
    t0 = time.perf_counter()
    results = backend.run_batch(jobs, concurrency=1)
    wall = time.perf_counter() - t0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    backend.shutdown()                   # zygotes exit and are reaped: their CPU and faults land in CHILDREN
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = len(jobs)
    cpu = (self1.ru_utime - self0.ru_utime + self1.ru_stime - self0.ru_stime
           + kids1.ru_utime - kids0.ru_utime + kids1.ru_stime - kids0.ru_stime)
    return {"jobs": n, "ok": sum(r.status == "ok" for r in results), "cpu_ms": 1e3 * cpu / n,
            "faults": (kids1.ru_minflt - kids0.ru_minflt) / n, "wall_ms": 1e3 * wall / n,
            "load": os.getloadavg()[0]}


def child(tree: str, workload: str, limit: int | None) -> None:
    sys.path[:0] = [tree, str(ROOT)] if tree != str(ROOT) else [str(ROOT)]
    import sandbox
    assert Path(sandbox.__file__).resolve().is_relative_to(Path(tree).resolve()), sandbox.__file__
    print(json.dumps(measure(workload, limit)))


def run_side_by_side(trees: dict[str, str], workload: str, limit: int | None) -> dict[str, dict]:
    """Start one measuring process per tree at the same moment; their results by name."""
    procs = {name: subprocess.Popen([sys.executable, __file__, "--child", tree, "--workload", workload]
                                    + (["--limit", str(limit)] if limit else []),
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for name, tree in trees.items()}
    out = {}
    for name, p in procs.items():
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"measuring {name} failed (exit {p.returncode})")
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    return out


def export_rev(rev: str, dest: str) -> None:
    archive = subprocess.run(["git", "archive", rev, "sandbox"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-rev", default=None, help="git revision whose sandbox/ runs beside this tree's")
    ap.add_argument("--rounds", type=int, default=3, help="side-by-side runs (medians are reported)")
    ap.add_argument("--workload", default="mbpp", choices=("mbpp", "trivial"))
    ap.add_argument("--limit", type=int, default=None, help="first N jobs only")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.workload, args.limit)
        return 0
    with tempfile.TemporaryDirectory(prefix="rlvr-sandbox-base-") as tmp:
        trees = {"this tree": str(ROOT)}
        if args.base_rev:
            export_rev(args.base_rev, tmp)
            trees = {f"base {args.base_rev}": tmp, **trees}
        rows: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            order = dict(reversed(trees.items())) if r % 2 else trees        # who starts first alternates
            for name, res in sorted(run_side_by_side(order, args.workload, args.limit).items(),
                                    key=lambda kv: list(trees).index(kv[0])):
                rows[name].append(res)
                print(f"round {r + 1}  {name:20s} {res['cpu_ms']:6.3f} ms CPU/job  {res['faults']:5.0f} faults/job  "
                      f"{res['wall_ms']:6.3f} ms wall/job  ({res['ok']}/{res['jobs']} ok, load {res['load']:.1f})")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("cpu_ms", "faults", "wall_ms")}
           for name, rs in rows.items()}
    print(f"\nmedians over {args.rounds} rounds ({args.workload}, one worker):")
    for name, m in med.items():
        print(f"  {name:20s} {m['cpu_ms']:6.3f} ms CPU/job  {m['faults']:5.0f} faults/job  "
              f"{m['wall_ms']:6.3f} ms wall/job")
    this = med["this tree"]
    summary = {"cpu_ms": round(this["cpu_ms"], 3), "faults": round(this["faults"], 1)}
    if args.base_rev:
        base = med[f"base {args.base_rev}"]
        summary.update(base_cpu_ms=round(base["cpu_ms"], 3), base_faults=round(base["faults"], 1),
                       cpu_ratio=round(base["cpu_ms"] / this["cpu_ms"], 3))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
