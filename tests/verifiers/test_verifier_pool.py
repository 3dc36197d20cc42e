"""The verifier pool: order, error mapping, hard deadlines that kill and replace wedged workers, threads.

Worker-side callables are builtins (`time.sleep`, `sum`, `int`, `os._exit`) or real verifier instances, so the
workers never need to import this test module.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.errors import ConfigError
from verifiers import pool
from verifiers.base import Verdict, VerifyContext
from verifiers.length import LengthVerifier

SLACK_S = 6.0   # start-up of the pool / a replacement worker on a loaded 2-core box; a bound, not a target
CHARS = LengthVerifier(mode="target", target=10, unit="chars")


def _ok_call(n_chars: int):
    return (CHARS, ("x" * n_chars, VerifyContext()))


def _assert_pool_answers():
    fn, args = _ok_call(10)
    v = pool.run_one(fn, *args, timeout=10)
    assert (v.status, v.reward) == ("correct", 0.0), v


def test_batch_keeps_order():
    verdicts = pool.run_batch([_ok_call(n) for n in (10, 15, 5, 30, 10)], timeout=10)
    assert [v.reward for v in verdicts] == [0.0, -0.5, -0.5, -1.0, 0.0]
    assert [v.info["length"] for v in verdicts] == [10, 15, 5, 30, 10]
    assert pool.run_batch([], timeout=1) == []


def test_exception_in_verifier_is_error():
    v = pool.run_one(int, "not a number", timeout=10)
    assert v.status == "error" and v.reward == 0.0
    assert v.info["reason"].startswith("ValueError")


def test_bad_results_and_unpicklable_calls_are_errors():
    v = pool.run_one(abs, -3, timeout=10)
    assert v.status == "error" and "not Verdict" in v.info["reason"]
    v = pool.run_one(Verdict, "fine", 1.0, timeout=10)                 # built in the worker, bad status
    assert v.status == "error" and "unknown status 'fine'" in v.info["reason"]
    assert pool.run_one(Verdict, "correct", 1.0, timeout=10) == Verdict("correct", 1.0)
    v = pool.run_one(lambda: Verdict("correct", 1.0), timeout=10)     # a lambda cannot be pickled
    assert v.status == "error" and v.reward == 0.0
    _assert_pool_answers()


@pytest.mark.parametrize("fn, args, slack", [
    (time.sleep, (100,), SLACK_S),        # wedged in a syscall
    # spinning inside C code, where pebble's Python SIGTERM handler never runs: only a worker with the
    # default SIGTERM action dies at once instead of after pebble's 3 s grace, hence the tighter bound
    (sum, (range(10**18),), 2.5),
], ids=["sleep", "busy-loop-in-C"])
def test_wedged_worker_is_killed_and_replaced(fn, args, slack):
    _assert_pool_answers()   # the pool is up: the clock below measures the kill, not the pool's start-up
    before = pool.health()
    start = time.monotonic()
    v = pool.run_one(fn, *args, timeout=1)
    elapsed = time.monotonic() - start
    assert v.status == "timeout" and v.reward == 0.0
    assert elapsed < 1 + slack
    after = pool.health()
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["restarts"] == before["restarts"] + 1
    _assert_pool_answers()


def test_memory_cap_turns_huge_allocation_into_error():
    if not 0 < pool._mem_mb() < 8192:
        pytest.skip("RLVR_VERIFY_MEM_MB is set to 0 or above 8 GiB")
    v = pool.run_one(bytearray, 8 * 2**30, timeout=10)                 # 8 GiB > the cap
    assert v.status == "error" and v.info["reason"].startswith("MemoryError")
    _assert_pool_answers()


def test_crashed_worker_is_error_and_replaced():
    v = pool.run_one(os._exit, 3, timeout=10)
    assert v.status == "error" and "exit code 3" in v.info["reason"]
    _assert_pool_answers()


def test_batch_with_wedged_calls_stays_within_bound():
    workers = pool.num_workers()
    n_wedged, timeout = 2 * workers, 1.0
    calls = [(time.sleep, (100,))] * n_wedged + [_ok_call(10)] * 4
    start = time.monotonic()
    verdicts = pool.run_batch(calls, timeout=timeout)
    elapsed = time.monotonic() - start
    assert [v.status for v in verdicts] == ["timeout"] * n_wedged + ["correct"] * 4
    assert elapsed < math.ceil(len(calls) / workers) * timeout + SLACK_S


def test_deadlines_work_from_threads():
    def job(i: int):
        if i == 0:
            return pool.run_one(time.sleep, 100, timeout=1).status
        fn, args = _ok_call(10)
        return pool.run_one(fn, *args, timeout=10).status

    with ThreadPoolExecutor(4) as ex:
        statuses = list(ex.map(job, range(4)))
    assert statuses == ["timeout", "correct", "correct", "correct"]
    assert threading.current_thread() is threading.main_thread()


def test_health_counts():
    before = pool.health()
    pool.run_batch([_ok_call(10), _ok_call(20), (int, ("x",))], timeout=10)
    after = pool.health()
    assert after["submitted"] - before["submitted"] == 3
    assert after["correct"] - before["correct"] == 1
    assert after["wrong"] - before["wrong"] == 1
    assert after["errors"] - before["errors"] == 1
    assert after["workers"] == pool.num_workers() >= 1
    assert set(after) >= {"submitted", "timeouts", "errors", "unparseable", "restarts", "crashes"}


def test_shutdown_then_lazy_restart():
    _assert_pool_answers()
    started = pool.health()["pools_started"]
    pool.shutdown()
    assert pool.health()["workers"] == 0
    _assert_pool_answers()
    assert pool.health()["pools_started"] == started + 1


def test_bad_settings(monkeypatch):
    with pytest.raises(ValueError, match="timeout"):
        pool.run_batch([_ok_call(1)], timeout=0)
    monkeypatch.setenv("RLVR_VERIFY_WORKERS", "zero")
    with pytest.raises(ConfigError, match="RLVR_VERIFY_WORKERS"):
        pool.num_workers()
    monkeypatch.setenv("RLVR_VERIFY_WORKERS", "3")
    assert pool.num_workers() == 3


class Unloadable:
    """Pickles fine; loading it in a worker raises `error` (MemoryError as under the address-space cap, or an
    ImportError as for a verifier whose module the worker cannot import)."""

    def __init__(self, error: str):
        self.error = error

    def __reduce__(self):
        import importlib
        return (bytearray, (1 << 60,)) if self.error == "memory" else \
            (importlib.import_module, ("no_such_module_for_the_pool_test",))


@pytest.mark.parametrize("error, reason", [("memory", "MemoryError"), ("import", "ModuleNotFoundError")])
def test_a_verifier_that_cannot_load_in_the_worker_is_an_error_not_a_stall(error, reason):
    before = pool.health()
    start = time.monotonic()
    v = pool.run_one(Unloadable(error), "response", timeout=10)
    assert time.monotonic() - start < 5.0      # answered by the worker, not by the parent's stall guard
    assert v.status == "error" and v.reward == 0.0
    assert v.info["reason"].startswith(f"could not load the verifier in the worker: {reason}")
    assert ("RLVR_VERIFY_MEM_MB" in v.info["reason"]) == (error == "memory")
    after = pool.health()
    assert after["stalls"] == before["stalls"] and after["crashes"] == before["crashes"]
    _assert_pool_answers()


def test_chunk_size():
    assert pool.chunk_size(8, 2) == 1 and pool.chunk_size(15, 2) == 1        # small batches: a task per call
    assert pool.chunk_size(64, 2) == 8 and pool.chunk_size(1024, 2) == 64     # ~4 tasks per worker
    assert pool.chunk_size(100_000, 2) == 64 and pool.chunk_size(100, 0) == 25


def test_large_batch_of_cheap_calls_goes_in_chunks_and_keeps_order(monkeypatch):
    assert CHARS.cheap is True and not hasattr(sum, "cheap")
    lengths = [(7 * i) % 23 for i in range(500)]
    calls = [_ok_call(n) for n in lengths] + [(lambda: None, ())] + [(sum, ([1, 2],)), (int, ("x",))]
    scheduled = []
    real_get_pool = pool._get_pool

    def spy():
        p = real_get_pool()
        class Spy:
            def schedule(self, fn, args, timeout):
                scheduled.append((fn.__name__, len(args[0]) if fn is pool._call_chunk else 1))
                return p.schedule(fn, args=args, timeout=timeout)
        return Spy()

    monkeypatch.setattr(pool, "_get_pool", spy)
    before = pool.health()
    verdicts = pool.run_batch(calls, timeout=10)
    assert [v.info["length"] for v in verdicts[:500]] == lengths
    assert [v.reward for v in verdicts[:500]] == [-min(1.0, abs(n - 10) / 10) for n in lengths]
    assert verdicts[500].status == "error"                                  # the unpicklable call alone
    assert verdicts[501].status == "error" and "not Verdict" in verdicts[501].info["reason"]
    assert verdicts[502].info["reason"].startswith("ValueError")
    # the 500 cheap calls in 8 chunks (chunk_size(500, 2) = 62), the two plain calls one task each
    assert sorted(scheduled) == sorted([("_call_chunk", 62)] * 8 + [("_call_chunk", 4), ("_call", 1), ("_call", 1)])
    after = pool.health()
    assert after["submitted"] - before["submitted"] == 503 and after["chunk_retries"] == before["chunk_retries"]


@pytest.mark.parametrize("bad, status, reason", [((time.sleep, (100,)), "timeout", "exceeded"),
                                                 ((os._exit, (3,)), "error", "exit code 3")],
                         ids=["wedged", "crash"])
def test_a_bad_call_inside_a_chunk_gets_its_own_verdict(bad, status, reason):
    _assert_pool_answers()
    calls = [_ok_call(10)] * 200
    calls[57] = bad
    before = pool.health()
    start = time.monotonic()
    verdicts = pool.run_batch(calls, timeout=1.0, chunk=25)                 # forced: builtins are not `cheap`
    elapsed = time.monotonic() - start
    assert [v.status for v in verdicts] == ["correct"] * 57 + [status] + ["correct"] * 142
    assert reason in verdicts[57].info["reason"]
    after = pool.health()
    assert after["chunk_retries"] == before["chunk_retries"] + 1             # only the chunk that held it
    assert after["restarts"] == before["restarts"] + 2                       # its worker, then the call's
    assert elapsed < 2 * 1.0 + 2 * SLACK_S                                    # the chunk's deadline + the re-run
    _assert_pool_answers()


def test_chunk_must_be_positive():
    with pytest.raises(ValueError, match="chunk"):
        pool.run_batch([_ok_call(1)], timeout=1, chunk=0)
