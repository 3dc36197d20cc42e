"""Math-verifier throughput: serial in-process calls vs the verifier process pool (`check_batch`).

Data: MATH-500 reference solutions paired with their gold answers (every pair should verify `correct`).
Both sides are warmed up first on unrelated pairs (imports, pool and worker start-up excluded), and each mode
reports its best of `--repeat` runs. CPU per pair (this process for serial, the workers for the pool) is printed
too: on a shared machine the wall-clock ratio reflects free cores, the CPU columns the pool's own overhead.
The last line printed is one JSON object:

    {"serial_per_s": ..., "pool_per_s": ..., "ratio": ..., "workers": ..., "n": ...,
     "serial_cpu_ms_per_pair": ..., "pool_worker_cpu_ms_per_pair": ...}

`--compare-chunking` instead times the pool's chunked dispatch of `cheap` verifiers (several calls per pool task,
the default) against one call per task, alternately in one process, on 1,024 rule-based calls (exact integer +
answer-tag format on 512 short responses: one R1-mini GRPO step's verification). Its JSON line:

    {"chunked_ms": ..., "per_call_ms": ..., "ratio": ..., "workers": ..., "n": ...}

Usage: python benchmarks/verifier_throughput.py [--limit N] [--repeat R] [--data PATH] [--compare-chunking]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path(os.environ.get("RLVR_SHARED_DATA", REPO.parent / "shared" / "data")) \
    / "prm800k_math_splits" / "test.jsonl"
WARMUP = [(r"so \boxed{\frac{7}{3}}", r"\frac{7}{3}"), ("#### 12", "12"), (r"\boxed{(1, 2)}", "(1,2)"),
          (r"\boxed{x \in [0, 1)}", "[0,1)")] * 4


def load_pairs(path: Path, limit: int | None) -> list[tuple[str, str]]:
    if not path.is_file():
        sys.exit(f"verifier_throughput: data file {path} not found (set RLVR_SHARED_DATA or --data)")
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["solution"], r["answer"]) for r in rows[:limit]]


def run_serial(pairs: list[tuple[str, str]]) -> tuple[float, list[str]]:
    from verifiers.base import VerifyContext
    from verifiers.math import MathVerifier

    verifier = MathVerifier()
    start = time.perf_counter()
    statuses = [verifier(response, VerifyContext(gold=gold)).status for response, gold in pairs]
    return time.perf_counter() - start, statuses


def run_pool(pairs: list[tuple[str, str]], timeout: float) -> tuple[float, list[str]]:
    from verifiers.math import check_batch

    start = time.perf_counter()
    statuses = [v.status for v in check_batch(pairs, timeout=timeout)]
    return time.perf_counter() - start, statuses


def workers_cpu_s() -> float | None:
    """CPU seconds used so far by the live pool workers (Linux /proc), or None where unavailable. On a shared
    machine this tells pool overhead (CPU per pair) apart from cores taken by other processes (wall time)."""
    import multiprocessing

    try:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in multiprocessing.active_children():
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])      # utime + stime
        return total / ticks
    except (OSError, ValueError, IndexError):
        return None


def rule_calls(n: int = 512) -> list:
    """n short R1-mini-like responses, each checked by the exact-integer and the format verifier."""
    from verifiers.base import VerifyContext
    from verifiers.format import FormatVerifier
    from verifiers.integer import IntegerVerifier

    integer, fmt = IntegerVerifier(), FormatVerifier(think_tag=None)
    return [(v, (f"<answer>{(37 * i) % 199}</answer>", VerifyContext(gold=str((41 * i) % 199))))
            for i in range(n) for v in (integer, fmt)]


def compare_chunking(repeat: int, timeout: float) -> dict:
    """Best-of-`repeat` wall time of both dispatch modes, alternating; their verdicts must agree."""
    from verifiers import pool

    calls = rule_calls()
    best: dict[str, float] = {}
    outputs: dict[str, list] = {}
    for _ in range(max(1, repeat)):
        for mode, chunk in (("chunked", None), ("per_call", 1)):   # None: the pool's own choice for cheap calls
            start = time.perf_counter()
            out = pool.run_batch(calls, timeout=timeout, chunk=chunk)
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - start)
            outputs[mode] = [(v.status, v.reward) for v in out]
    if outputs["chunked"] != outputs["per_call"]:
        raise SystemExit("verifier_throughput: verdicts differ between the dispatch modes")
    chunked, per_call = 1000 * best["chunked"], 1000 * best["per_call"]
    print(f"{'calls':<26} {'n':>6} {'chunked ms':>11} {'per call ms':>12} {'ratio':>7}")
    print(f"{'integer + format':<26} {len(calls):>6} {chunked:>11.1f} {per_call:>12.1f} {per_call / chunked:>6.2f}x")
    return {"chunked_ms": round(chunked, 1), "per_call_ms": round(per_call, 1),
            "ratio": round(per_call / chunked, 2), "workers": pool.num_workers(), "n": len(calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use the first N pairs (default: all 500)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; the best is reported")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-call deadline in the pool (s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MATH-500 test.jsonl")
    parser.add_argument("--compare-chunking", action="store_true",
                        help="the pool's chunked dispatch vs one call per task (see the module docstring)")
    args = parser.parse_args(argv)
    from verifiers import pool

    if args.compare_chunking:
        pool.run_batch(rule_calls(8), timeout=args.timeout)     # starts the forkserver and every worker
        print(json.dumps(compare_chunking(args.repeat, args.timeout)))
        return 0
    pairs = load_pairs(args.data, args.limit)
    run_serial(WARMUP)                                  # imports sympy / math-verify in this process
    run_pool(WARMUP * pool.num_workers(), args.timeout)  # starts the forkserver and every worker
    cpu0 = time.process_time()
    serial = [run_serial(pairs) for _ in range(args.repeat)]
    serial_cpu = (time.process_time() - cpu0) / args.repeat
    cpu0 = workers_cpu_s()
    pooled = [run_pool(pairs, args.timeout) for _ in range(args.repeat)]
    cpu1 = workers_cpu_s()
    pool_cpu = (cpu1 - cpu0) / args.repeat if cpu0 is not None and cpu1 is not None else float("nan")
    serial_s, serial_status = min(serial)
    pool_s, pool_status = min(pooled)

    n = len(pairs)
    result = {"serial_per_s": round(n / serial_s, 1), "pool_per_s": round(n / pool_s, 1),
              "ratio": round(serial_s / pool_s, 2), "workers": pool.num_workers(), "n": n,
              "serial_cpu_ms_per_pair": round(1000 * serial_cpu / n, 2),
              "pool_worker_cpu_ms_per_pair": round(1000 * pool_cpu / n, 2)}
    agree = sum(a == b for a, b in zip(serial_status, pool_status))
    print(f"{'mode':<8} {'pairs':>6} {'wall s':>8} {'pairs/s':>8} {'cpu ms/pair':>12} {'correct':>8}")
    for mode, secs, cpu, statuses in (("serial", serial_s, serial_cpu, serial_status),
                                      ("pool", pool_s, pool_cpu, pool_status)):
        print(f"{mode:<8} {n:>6} {secs:>8.2f} {n / secs:>8.1f} {1000 * cpu / n:>12.2f} "
              f"{statuses.count('correct'):>8}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"workers={result['workers']}  speed-up={result['ratio']:.2f}x  status agreement={agree}/{n}  "
          f"cpus={os.cpu_count()}  load(1 min)={load:.1f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
