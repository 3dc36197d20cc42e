"""The verifier process pool: every verification call runs in a worker process with a hard deadline.

Why processes: sympy / math-verify can spin for minutes (or forever) inside C code on inputs like
`9^{9^{9^9}}`, and math-verify's own guard is `signal.alarm`, which only works in the main thread. Here the
parent (any thread) enforces deadlines by killing the worker and starting a replacement, so no library code
needs a timeout of its own.

Covered / not covered
- covered: a call that overruns `timeout` (measured from when it starts running in a worker) is killed
  (SIGTERM, which the worker does not trap, so it dies even inside a C loop) and returns
  `Verdict("timeout", 0.0, ...)`; the worker is replaced and the pool keeps answering.
- covered: an exception inside a verifier -> `Verdict("error", 0.0, {"reason": ...})`; a worker that dies
  (segfault, `os._exit`, out of memory) -> `error` with the exit code; a result that is not a Verdict -> `error`.
- covered: each worker has an address-space cap (`RLVR_VERIFY_MEM_MB`, default 4096), so a runaway allocation
  (sympy expanding a huge power) fails with MemoryError -> `error` instead of eating the machine's memory before
  the deadline hits. Raise it (or 0 = off) for a verifier that loads big libraries (torch maps GiBs).
- not covered: this is not a sandbox. Verifiers are trusted code; model output is only *data* here. Running
  model-written code is `sandbox/`'s job.

Batching: calls to verifiers marked `cheap = True` (bounded, sub-millisecond checks: integer, format, length,
repetition) go to the workers in chunks of up to 64, one task per chunk, because a task's round trip (~0.15 ms of
pickling, pipes and pebble's bookkeeping) costs more than such a check. A chunk must finish within one call's
`timeout`; a chunk that overruns it, or whose worker dies, is re-run one call per task with the usual per-call
deadline, so every call still gets its own verdict (a hung call is a `timeout`, its neighbours are not) and a
hang costs at most one extra `timeout`. Other verifiers (math, code: seconds per call are normal) keep one call
per task, so a slow but healthy chunk never wastes a deadline. `run_batch(..., chunk=N)` forces a chunk size.

Workers start from a "forkserver" (a clean interpreter that imports `verifiers.math` and warms math-verify up
once, see `verifiers._warmup`), not by forking the parent, which has torch and its threads loaded. A replacement
worker is a fork of that server: milliseconds, not an interpreter start plus ~0.4 s of first-parse set-up.

As with any spawn/forkserver multiprocessing, a script that verifies needs an `if __name__ == "__main__":` guard
(the forkserver imports the main script once).

Settings (environment): `RLVR_VERIFY_WORKERS` (default os.cpu_count()), `RLVR_VERIFY_MEM_MB` (0 = no cap),
`RLVR_VERIFY_START_METHOD` (forkserver | spawn | fork).
"""
from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import Counter
from concurrent.futures import CancelledError
from typing import Any, Callable, Sequence

from verifiers.base import STATUSES, Verdict

__all__ = ["run_batch", "run_one", "health", "shutdown", "num_workers"]

PRELOAD = ("verifiers._warmup",)    # imported (and run) once in the forkserver; workers inherit it
_STALL_GRACE_S = 30.0                          # parent-side guard on top of pebble's own deadlines
_CHUNK_MAX = 64                                # calls per pool task (see "Batching" above)
_CHUNKS_PER_WORKER = 4                         # enough tasks that a slow chunk does not idle the other workers
_REASON_CHARS = 300

_lock = threading.Lock()
_pool: Any = None                              # pebble.ProcessPool, created lazily
_pool_pid: int | None = None                   # the process that created it (a forked child must not reuse it)
_workers = 0
_counts: Counter[str] = Counter()


# ----------------------------------------------------------------------------------------------- worker side
def _init_worker(mem_mb: int) -> None:
    # pebble installs a Python SIGTERM handler, which cannot run while the worker is stuck in C code; the
    # default action kills at once, so a timed-out worker is gone immediately instead of after pebble's 3 s.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if mem_mb > 0:
        import resource

        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _call(payload: bytes) -> Verdict:
    """Runs in the worker. The call arrives pickled and is loaded here, so a verifier whose module cannot be
    imported in the worker (an ImportError, or a MemoryError under the address-space cap: CUDA builds of torch
    map several GiB) is an `error` verdict saying so, instead of a worker dying inside pebble's task fetch
    (which loses the task: the parent only notices at its stall guard, tens of seconds later). Exceptions become
    `error` verdicts here, because some do not pickle."""
    try:
        fn, args = pickle.loads(payload)
    except Exception as e:  # noqa: BLE001
        reason = f"could not load the verifier in the worker: {_describe(e)}"
        if isinstance(e, MemoryError):
            reason += f"; RLVR_VERIFY_MEM_MB={_mem_mb()} caps each worker's address space"
        return Verdict("error", 0.0, {"reason": reason[:_REASON_CHARS]})
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001 (MemoryError and RecursionError included, on purpose)
        return Verdict("error", 0.0, {"reason": _describe(e)})
    if not isinstance(out, Verdict):
        return Verdict("error", 0.0, {"reason": f"verifier returned {type(out).__name__}, not Verdict"})
    if out.status not in STATUSES:
        return Verdict("error", 0.0, {"reason": f"verifier returned unknown status {out.status!r}"})
    return out


def _call_chunk(payloads: list[bytes]) -> list[Verdict]:
    """Runs in the worker: several calls, one verdict each (`_call` turns every failure into a verdict)."""
    return [_call(p) for p in payloads]


def _describe(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 (str() of a sympy object inside an exception can itself fail)
        text = ""
    return f"{type(e).__name__}: {text}"[:_REASON_CHARS]


# ----------------------------------------------------------------------------------------------- parent side
def num_workers() -> int:
    """Worker count: `RLVR_VERIFY_WORKERS`, else os.cpu_count()."""
    raw = os.environ.get("RLVR_VERIFY_WORKERS", "").strip()
    if not raw:
        return os.cpu_count() or 1
    if not raw.isdigit() or int(raw) < 1:
        from rlvr.errors import ConfigError

        raise ConfigError(f"RLVR_VERIFY_WORKERS={raw!r}: expected a positive integer")
    return int(raw)


def _mem_mb() -> int:
    raw = os.environ.get("RLVR_VERIFY_MEM_MB", "4096").strip()
    if not raw.isdigit():
        from rlvr.errors import ConfigError

        raise ConfigError(f"RLVR_VERIFY_MEM_MB={raw!r}: expected a non-negative integer (0 = no cap)")
    return int(raw)


def _mp_context():
    method = os.environ.get("RLVR_VERIFY_START_METHOD", "forkserver")
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _get_pool():
    global _pool, _pool_pid, _workers
    with _lock:
        if _pool is not None and _pool_pid == os.getpid() and _pool.active:
            return _pool
        from pebble import ProcessPool

        _workers = num_workers()
        _pool = ProcessPool(max_workers=_workers, initializer=_init_worker, initargs=(_mem_mb(),),
                            context=_mp_context())
        _pool_pid = os.getpid()
        _counts["pools_started"] += 1
        return _pool


def run_batch(calls: Sequence[tuple[Callable[..., Verdict], tuple]], timeout: float,
              chunk: int | None = None) -> list[Verdict]:
    """Run `fn(*args)` for every `(fn, args)` on the pool; verdicts come back in the order of `calls`.

    `timeout` (seconds) is per call, counted from when the call starts running in a worker, so a batch of n
    takes at most about ceil(n / workers) * timeout (plus one `timeout` per chunk holding a wedged call, see
    "Batching"). `fn` must be picklable (a module-level function or a verifier instance). `chunk`: calls per
    pool task for every call (None: `chunk_size` for calls whose `fn` is marked `cheap`, 1 for the others).
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not calls:
        return []
    payloads = [_payload(fn, args) for fn, args in calls]
    groupable = [chunk is not None or getattr(fn, "cheap", False) is True for fn, _ in calls]
    try:
        verdicts = _run_payloads(_get_pool(), payloads, groupable, chunk, timeout)
    except RuntimeError:   # another thread shut the pool down in between: start a new one, once
        verdicts = _run_payloads(_get_pool(), payloads, groupable, chunk, timeout)
    with _lock:
        _counts["submitted"] += len(calls)
        _counts.update(_COUNTER_OF[v.status] for v in verdicts)
    return verdicts


def _payload(fn, args) -> bytes | Verdict:
    try:
        return pickle.dumps((fn, tuple(args)), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001 (a lambda, a lock, ...): this call's verdict is an error
        return Verdict("error", 0.0, {"reason": _describe(e)})


def chunk_size(n: int, workers: int) -> int:
    """Calls per pool task for n cheap calls: about `_CHUNKS_PER_WORKER` tasks per worker, at most `_CHUNK_MAX`
    calls each; 1 (one call per task) for small batches."""
    return max(1, min(_CHUNK_MAX, n // (max(workers, 1) * _CHUNKS_PER_WORKER)))


def _run_payloads(pool, payloads: list, groupable: list[bool], chunk: int | None, timeout: float
                  ) -> list[Verdict]:
    out: list[Verdict | None] = [p if isinstance(p, Verdict) else None for p in payloads]
    todo = [i for i, p in enumerate(payloads) if not isinstance(p, Verdict)]
    grouped = [i for i in todo if groupable[i]]
    size = chunk if chunk is not None else chunk_size(len(grouped), _workers)
    if size > 1:
        singles = [i for i in todo if not groupable[i]]
    else:                                   # chunks of one: plain one-call tasks for everything
        grouped, singles = [], todo
    chunks = [grouped[i:i + size] for i in range(0, len(grouped), size)]
    # Everything is scheduled before anything is awaited, so chunks and single calls share the workers.
    chunk_futures = [pool.schedule(_call_chunk, args=([payloads[i] for i in c],), timeout=timeout) for c in chunks]
    single_futures = [pool.schedule(_call, args=(payloads[i],), timeout=timeout) for i in singles]
    deadline = _deadline(len(chunks) + len(singles), timeout)
    retry: list[int] = []
    for c, f in zip(chunks, chunk_futures):
        got = _collect_chunk(f, deadline, len(c))
        if got is None:
            retry.extend(c)
        else:
            for i, v in zip(c, got):
                out[i] = v
    for i, f in zip(singles, single_futures):
        out[i] = _collect(f, timeout, deadline)
    retry_futures = [pool.schedule(_call, args=(payloads[i],), timeout=timeout) for i in retry]
    deadline = _deadline(len(retry), timeout)
    for i, f in zip(retry, retry_futures):
        out[i] = _collect(f, timeout, deadline)
    return out  # type: ignore[return-value]


def _deadline(n_tasks: int, timeout: float) -> float:
    """Parent-side stall guard for n_tasks scheduled at once (pebble enforces the real per-task deadlines)."""
    return time.monotonic() + 2 * math.ceil(n_tasks / max(_workers, 1)) * (timeout + 1) + _STALL_GRACE_S


def _collect_chunk(future, deadline: float, n: int) -> list[Verdict] | None:
    """A chunk's verdicts, or None when it overran its deadline or lost its worker (then its calls are re-run one
    per task, and their verdicts and counters say what happened to each)."""
    from pebble import ProcessExpired

    try:
        got = future.result(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(got, list) and len(got) == n:
            return got
    except TimeoutError:
        if future.done():          # pebble's deadline killed the worker
            with _lock:
                _counts["restarts"] += 1
        else:
            future.cancel()
    except ProcessExpired:
        with _lock:
            _counts["restarts"] += 1
    except Exception:  # noqa: BLE001 (CancelledError, a broken pool): the one-by-one re-run reports it
        pass
    with _lock:
        _counts["chunk_retries"] += 1
    return None


def run_one(fn: Callable[..., Verdict], *args: Any, timeout: float) -> Verdict:
    """`run_batch` for one call."""
    return run_batch([(fn, args)], timeout)[0]


_COUNTER_OF = {"correct": "correct", "wrong": "wrong", "unparseable": "unparseable",
               "timeout": "timeouts", "error": "errors"}


def _collect(future, timeout: float, deadline: float) -> Verdict:
    from pebble import ProcessExpired

    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except ProcessExpired as e:
        with _lock:
            _counts["crashes"] += 1
            _counts["restarts"] += 1
        return Verdict("error", 0.0, {"reason": f"worker died (exit code {e.exitcode})"})
    except TimeoutError:
        if future.done():      # pebble's deadline: the worker was killed and replaced
            with _lock:
                _counts["restarts"] += 1
            return Verdict("timeout", 0.0, {"reason": f"exceeded {timeout:g}s; worker killed"})
        future.cancel()        # parent-side guard: the pool itself stalled (should not happen)
        with _lock:
            _counts["stalls"] += 1
        return Verdict("timeout", 0.0, {"reason": "pool stalled; call cancelled"})
    except CancelledError:
        return Verdict("error", 0.0, {"reason": "call cancelled (pool shut down)"})
    except Exception as e:  # noqa: BLE001 (pickling problems, a broken pool)
        return Verdict("error", 0.0, {"reason": _describe(e)})


def health() -> dict[str, int]:
    """Counters since start-up (for training metrics, e.g. `verify/timeouts`): submitted, correct, wrong,
    unparseable, timeouts, errors, crashes, restarts (workers killed or died and replaced), stalls,
    chunk_retries (chunks re-run one call per task), pools_started, workers."""
    with _lock:
        keys = ("submitted", "correct", "wrong", "unparseable", "timeouts", "errors", "crashes", "restarts",
                "stalls", "chunk_retries", "pools_started")
        out = {k: int(_counts[k]) for k in keys}
        out["workers"] = _workers if _pool is not None else 0
        return out


def shutdown() -> None:
    """Stop the pool (running calls are abandoned). The next call starts a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
        if pool is None or _pool_pid != os.getpid():
            return
    pool.stop()
    try:
        pool.join(timeout=10)
    except TimeoutError:
        pass


atexit.register(shutdown)
