"""sandbox.run / run_batch semantics on the local backend: statuses, output, limits, isolation between jobs."""
from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from sandbox import Job, Limits, Result, run
from sandbox.api import classify
from sandbox.local import JOB_ENV, LocalBackend, LocalOptions


def _one(backend, code, **kw) -> Result:
    return backend.run_batch([Job(code, **kw)], concurrency=1)[0]


# ------------------------------------------------------------------------------------------- status table
@pytest.mark.parametrize("exit_code, kw, status", [
    (0, {}, "ok"),
    (3, {}, "failed"),
    (-signal.SIGSEGV, {}, "killed"),
    (-signal.SIGKILL, {}, "killed"),
    (-signal.SIGKILL, {"oom_killed": True}, "memory"),
    (-signal.SIGKILL, {"host_oom": True}, "memory"),
    (-signal.SIGSEGV, {"host_oom": True}, "killed"),       # only a SIGKILL can be the OOM killer's
    (1, {"memory_error": True}, "memory"),
    (-signal.SIGXCPU, {}, "timeout"),
    (-signal.SIGKILL, {"timed_out": True}, "timeout"),
    (-signal.SIGKILL, {"cpu_limited": True}, "timeout"),
    (None, {}, "error"),
    (0, {"setup_failed": True}, "error"),
])
def test_classify_table(exit_code, kw, status):
    assert classify(exit_code, **{"timed_out": False, **kw})[0] == status


def test_host_oom_counter_reads_the_kernels_count():
    from pathlib import Path

    from sandbox.local import host_oom_kills
    vmstat = Path("/proc/vmstat")
    if not vmstat.exists() or "oom_kill " not in vmstat.read_text():
        pytest.skip("no /proc/vmstat oom_kill counter on this kernel")
    n = host_oom_kills()
    assert isinstance(n, int) and n >= 0
    assert n == int(next(line.split()[1] for line in vmstat.read_text().splitlines() if line.startswith("oom_kill ")))


def test_job_and_limits_reject_bad_values():
    with pytest.raises(ValueError, match="timeout_s"):
        Job("1", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Job("1", memory_mb=8)
    with pytest.raises(ValueError, match="stay inside"):
        Job("1", files={"../x.txt": "no"})
    with pytest.raises(ValueError, match="open_files"):
        Limits(open_files=0)


# ------------------------------------------------------------------------------------------- behaviour
def test_ok_stdin_files_and_exit_codes(backend):
    res = _one(backend, "import sys\nprint(input()[::-1]); print(open('data/in.txt').read())",
               stdin="abc\n", files={"data/in.txt": "file text"})
    assert (res.status, res.exit_code, res.stdout, res.completed) == ("ok", 0, "cba\nfile text\n", True)
    res = _one(backend, "import sys\nsys.exit(4)")
    assert (res.status, res.exit_code, res.completed) == ("failed", 4, False)
    res = _one(backend, "raise ValueError('boom')")
    assert res.status == "failed" and "ValueError: boom" in res.stderr and 'File "main.py"' in res.stderr
    res = _one(backend, "def f(:\n")
    assert res.status == "failed" and "SyntaxError" in res.stderr


def test_stdout_is_capped_with_a_flag(backend):
    res = _one(backend, "print('x' * 5000)", limits=Limits(output_bytes=100))
    assert res.status == "ok" and res.stdout == "x" * 100 and res.stdout_truncated
    assert not res.stderr_truncated


def test_timeout_and_cpu_limit(backend):
    res = _one(backend, "import time\ntime.sleep(30)", timeout_s=0.5)
    assert res.status == "timeout" and 0.4 < res.wall_s < 2.0
    res = _one(backend, "while True:\n    pass", timeout_s=10, limits=Limits(cpu_s=1))
    assert res.status == "timeout" and "CPU" in res.reason and res.wall_s < 5


def test_cpu_hard_limit_kill_is_a_timeout_not_a_crash(backend):
    """A job that ignores SIGXCPU runs on to RLIMIT_CPU's hard limit, where the kernel sends SIGKILL (what a loaded
    box can also produce when the sandbox misses its wall-clock deadline): it ran out of time, not into a crash."""
    res = _one(backend, "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
               timeout_s=20, limits=Limits(cpu_s=1))
    assert (res.status, res.exit_code) == ("timeout", -signal.SIGKILL) and "hard limit" in res.reason, res
    assert res.wall_s < 10


def test_memory_limit(backend):
    res = _one(backend, "x = bytearray(400 << 20)", memory_mb=128)
    assert res.status == "memory"
    assert _one(backend, "x = bytearray(50 << 20); print(len(x))", memory_mb=256).stdout == f"{50 << 20}\n"


def test_environment_is_scrubbed(backend, monkeypatch):
    monkeypatch.setenv("RLVR_SECRET_TOKEN", "hunter2")
    backend.shutdown()                     # new zygotes are children of a parent holding the secret
    res = _one(backend, "import os\nprint(sorted(os.environ))\nprint(os.environ.get('RLVR_SECRET_TOKEN'))")
    assert "hunter2" not in res.stdout and "RLVR_SECRET_TOKEN" not in res.stdout
    # exactly the job environment: nothing of the zygote's own start-up environment (LD_BIND_NOW) either
    assert res.stdout.splitlines()[0] == str(sorted({*JOB_ENV, "HOME", "TMPDIR"}))


def test_each_job_gets_a_fresh_dir_and_nothing_carries_over(backend):
    first = _one(backend, "import os\nopen('left.txt', 'w').write('x')\n"
                 "open(os.environ['TMPDIR'] + '/t', 'w').write('x')\nprint(os.getcwd())")
    second = _one(backend, "import os\nprint(os.getcwd(), sorted(os.listdir('.')))")
    assert first.status == second.status == "ok"
    assert "left.txt" not in second.stdout and "[]" in second.stdout


def test_run_batch_keeps_order_and_runs_in_parallel(backend):
    jobs = [Job(f"import time\ntime.sleep(0.5)\nprint({i})") for i in range(4)]
    start = time.monotonic()
    results = backend.run_batch(jobs, concurrency=4)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert time.monotonic() - start < 1.8            # one after another would take 2 s


def test_job_runs_unprivileged(backend):
    res = _one(backend, "import os\nprint(os.getuid())")
    root = os.geteuid() == 0
    assert res.status == "ok" and (not root or res.stdout.strip() != "0")


def test_module_level_run_uses_the_default_backend():
    res = run("print(6 * 7)", timeout_s=5)
    assert res.ok and res.stdout == "42\n" and res.backend == "local"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")
def test_fresh_mode_runs_each_job_in_a_new_zygote():
    from sandbox.local import LocalBackend, LocalOptions

    b = LocalBackend(LocalOptions(mode="fresh"))
    try:
        results = b.run_batch([Job("print(1)"), Job("print(2)")], concurrency=2)
        assert [r.stdout for r in results] == ["1\n", "2\n"] and not b._idle
    finally:
        b.shutdown()


def test_prelude_runs_first_in_the_same_namespace(config_backend):
    """`Job.prelude` (a trusted harness) runs before the code, with the same globals; completion still needs
    the code's top level to run to its end; a broken prelude fails like broken code."""
    good, early, broken = config_backend.run_batch([
        Job("print(helper(41), __name__)", prelude="def helper(x):\n    return x + 1\n"),
        Job("print('never')", prelude="import sys\nsys.exit(0)\n"),
        Job("print('never')", prelude="def (:\n"),
    ], concurrency=1)
    assert good.status == "ok" and good.completed and good.stdout == "42 __main__\n"
    assert early.status == "ok" and not early.completed and early.stdout == ""
    assert broken.status == "failed" and "SyntaxError" in broken.stderr and not broken.completed


def test_modules_left_to_the_job_import_and_the_zygote_stays_small(config_backend):
    """The zygote holds neither shutil's compression modules nor the rare heavy ones (every page and mapping it
    holds is copied at each fork), except where the job could not import them itself (root without bubblewrap:
    uid 65534 may not read the standard library). Either way the job imports them, and its shutil is complete."""
    probe = ("import sys\nprint(sorted(m for m in ('zlib', 'bz2', 'lzma', 'shutil', 'dataclasses', 'hashlib') "
             "if m in sys.modules))\nimport shutil, hashlib, dataclasses, statistics, calendar\n"
             "print(shutil._ZLIB_SUPPORTED, shutil._LZMA_SUPPORTED, hashlib.sha256(b'').hexdigest()[:8])")
    res = _one(config_backend, probe)
    assert res.status == "ok", res.stderr
    held, imported = res.stdout.splitlines()
    uid_drop = not config_backend._spec.use_bwrap and os.geteuid() == 0
    assert held == (str(sorted(['bz2', 'dataclasses', 'hashlib', 'lzma', 'shutil', 'zlib'])) if uid_drop else "[]")
    assert imported == f"{shutil._ZLIB_SUPPORTED} {shutil._LZMA_SUPPORTED} e3b0c442"


def test_zygote_removes_a_job_dir_without_following_links(tmp_path):
    """The zygote's rmtree (shutil's, loaded without the compression modules) removes nested dirs and read-only
    files and leaves the targets of symlinks alone."""
    from sandbox import _zygote

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    job = tmp_path / "job1"
    (job / "a" / "b").mkdir(parents=True)
    (job / "a" / "b" / "f.txt").write_text("x")
    (job / "a" / "b" / "f.txt").chmod(0o400)
    (job / "a" / "link").symlink_to(outside, target_is_directory=True)
    _zygote.remove_dir(str(job))
    assert not job.exists() and (outside / "keep.txt").read_text() == "x"


def test_start_workers_starts_the_pool_before_the_first_jobs():
    b = LocalBackend(LocalOptions(workers=2))
    try:
        b.start_workers()
        pids = sorted(z.proc.pid for z in b._idle)
        assert len(pids) == 2
        assert [r.stdout for r in b.run_batch([Job(f"print({i})") for i in range(4)], concurrency=2)] == \
            [f"{i}\n" for i in range(4)]
        assert sorted(z.proc.pid for z in b._idle) == pids          # the batch started no zygote of its own
    finally:
        b.shutdown()


def test_each_job_gets_its_own_home_and_tmpdir(backend):
    code = "import os\nprint(os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd(), os.getcwd())"
    first, second = (_one(backend, code) for _ in range(2))
    assert first.stdout.startswith("True ") and second.stdout.startswith("True ")
    assert first.stdout != second.stdout


def test_zygote_compiles_each_prelude_once():
    """The zygote keeps each compiled prelude under the key the parent sends (the source comes once) and drops
    the one the parent says; one that does not compile stays source, for the child to compile and report."""
    from sandbox import _zygote

    z = _zygote.Zygote(0, 1, {"workroot": "/nonexistent"})
    first = z.compiled_prelude({"prelude_key": "0", "prelude": "x = 1\n"})
    assert first.co_filename == "prelude.py" and z.compiled_prelude({"prelude_key": "0"}) is first
    assert z.compiled_prelude({}) is None
    assert z.compiled_prelude({"prelude_key": "1", "prelude": "def (:\n"}) == "def (:\n"
    z.compiled_prelude({"prelude_key": "2", "prelude": "y = 1\n", "forget_prelude": "0"})
    assert set(z.preludes) == {"1", "2"}


def test_preludes_travel_once_per_zygote_and_survive_eviction(backend):
    """The parent sends a prelude's source with its first job on a zygote, then only its key, and keeps the
    zygote's cache to MAX_PRELUDES; a prelude used again after being dropped is sent again."""
    from sandbox.local import MAX_PRELUDES, Zygote

    backend.layers()                                   # picks how zygotes start here
    z = Zygote(backend._spec, 32)
    try:
        assert z._prelude_fields("a = 1\n") == {"prelude_key": "0", "prelude": "a = 1\n"}
        assert z._prelude_fields("a = 1\n") == {"prelude_key": "0"}
        n = MAX_PRELUDES + 2
        results = [z.run(Job("print(v)", prelude=f"v = {i}\n")) for i in range(n)]
        results.append(z.run(Job("print(v)", prelude="v = 0\n")))            # dropped meanwhile: resent
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(n)] + ["0\n"]
        assert len(z._preludes) == MAX_PRELUDES
    finally:
        z.close()