"""The `local` backend: warm zygote processes (one per worker) that fork a child per job.

Each zygote is `python -I -S -c <sandbox/_zygote.py>`, started inside bubblewrap when `bwrap` works here
(new user/pid/net/ipc/uts/cgroup namespaces, uid 65534, all capabilities dropped, read-only binds of the
system and Python directories only, a private size-capped tmpfs /tmp), otherwise as a plain process that drops
the job, when we are root, to a uid of that zygote's own (SANDBOX_UID_BASE + its pid) and unshares its network
namespace where it can. Either way it installs
the seccomp filter (`sandbox.seccomp`) and, where writable, sits in its own pids + memory cgroups.

Modes (env `RLVR_SANDBOX_MODE`):
- `warm` (default): zygotes are reused; a job costs one fork (~390 jobs/s on 2 cores). Jobs of one zygote run
  one after another in the same namespaces; between jobs everything the job started is killed and its files,
  /tmp and /dev/shm are wiped (see docs/sandbox.md for what can still leak between jobs).
- `fresh`: a new zygote (a new bubblewrap) per job, closed after it: stricter, ~30-45 jobs/s.

Other settings (env): `RLVR_SANDBOX_BWRAP` = auto | on | off (on: fail instead of falling back),
`RLVR_SANDBOX_WORKERS` (default os.cpu_count()), `RLVR_SANDBOX_TMPFS_MB` (default 64).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from sandbox import cgroups, seccomp
from sandbox.api import Job, Result, classify, register_backend

__all__ = ["LocalOptions", "LocalBackend", "Layer"]

log = logging.getLogger("rlvr.sandbox")

SANDBOX_UID = 65534                     # "nobody": inside bubblewrap's user namespace, or where no uid of its own fits
# Outside bubblewrap, as root, each zygote's jobs run as SANDBOX_UID_BASE + the zygote's pid: a uid no one else
# has, so a job cannot signal (kill(-1), /proc walks) the jobs of other zygotes running beside it, nor host daemons
# that run as "nobody", and RLIMIT_NPROC counts only its own zygote's processes. Below 2**31: no signedness surprises.
SANDBOX_UID_BASE = 2_000_000_000
ZYGOTE_MEMORY_MB = 256                  # cgroup headroom for the zygote itself and its tmpfs, above a job's cap
EXTRA_PIDS = 8                          # cgroup pids for bwrap + the zygote, above a job's `processes`
REPLY_GRACE_S = 15.0                    # parent-side guard on top of the zygote's own deadline
MAX_PRELUDES = 16                       # compiled preludes each zygote keeps (`Job.prelude`)
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
           "random", "operator", "copy", "json", "fractions", "decimal", "datetime", "array", "cmath", "struct",
           "textwrap", "unicodedata", "enum", "numbers", "time", "traceback", "io", "abc", "contextlib", "types",
           "weakref")
# Loaded by the jobs that import them, except where a job could not read the standard library itself (uid drop,
# below). threading/queue register an at-fork hook that runs in every forked child (~0.4 ms a job, measured);
# the others are rare in solutions and big: dataclasses pulls in inspect/ast/dis (1.1 MB), hashlib maps libcrypto
# (16 mappings, 0.6 MB), shutil zlib/bz2/lzma (30 mappings; the zygote's own rmtree is loaded without them).
# Every page and mapping the zygote holds is copied at each fork and torn down at exit.
PRELOAD_ON_DEMAND = ("queue", "threading", "dataclasses", "hashlib", "statistics", "calendar", "shutil")
JOB_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
# Added to a warm zygote's start-up environment (it swaps in JOB_ENV before the first fork). LD_BIND_NOW: the
# dynamic linker resolves every symbol at start-up (~2 ms), not lazily in each forked child (~10 fewer
# copy-on-write faults a job); a fresh-mode zygote serves one job, so it starts without.
ZYGOTE_ENV = {"LD_BIND_NOW": "1"}
ZYGOTE_SOURCE = (Path(__file__).parent / "_zygote.py").read_text()


@dataclass(frozen=True)
class LocalOptions:
    mode: str = "warm"          # warm | fresh (see the module docstring)
    bwrap: str = "auto"         # auto | on | off
    workers: int = 0            # zygotes kept warm; 0 = os.cpu_count()
    tmpfs_mb: int = 64          # size of the private /tmp inside bubblewrap

    def __post_init__(self) -> None:
        if self.mode not in ("warm", "fresh"):
            raise ValueError(f"sandbox mode {self.mode!r}: expected 'warm' or 'fresh'")
        if self.bwrap not in ("auto", "on", "off"):
            raise ValueError(f"sandbox bwrap {self.bwrap!r}: expected 'auto', 'on' or 'off'")

    @classmethod
    def from_env(cls) -> "LocalOptions":
        env = os.environ
        try:
            return cls(mode=env.get("RLVR_SANDBOX_MODE", "warm"), bwrap=env.get("RLVR_SANDBOX_BWRAP", "auto"),
                       workers=int(env.get("RLVR_SANDBOX_WORKERS", "0")),
                       tmpfs_mb=int(env.get("RLVR_SANDBOX_TMPFS_MB", "64")))
        except ValueError as e:
            from rlvr.errors import ConfigError
            raise ConfigError(f"sandbox environment settings: {e}") from None

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class Layer:
    on: bool
    detail: str


# ------------------------------------------------------------------------------------------ how to start
@lru_cache(maxsize=1)
def bwrap_features() -> tuple[str | None, frozenset[str]]:
    """(path to bwrap or None, which of the optional flags we use it knows: older versions lack some)."""
    path = shutil.which("bwrap")
    if path is None:
        return None, frozenset()
    try:
        text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None, frozenset()
    return path, frozenset(f for f in ("--disable-userns", "--size", "--as-pid-1") if f in text)


def python_paths() -> tuple[str, str]:
    """(interpreter, prefix): the base interpreter behind any virtualenv; jobs get its standard library only."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, sys.base_prefix


def bwrap_argv(bwrap: str, features: frozenset[str], tmpfs_mb: int, env: dict[str, str]) -> list[str]:
    exe, prefix = python_paths()
    argv = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--clearenv", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
            "--hostname", "sandbox"]
    argv += [f for f in ("--as-pid-1", "--disable-userns") if f in features]   # without pid 1: subreaper mode
    bound: list[str] = []
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
            bound.append(d)
    for d in {prefix, os.path.dirname(os.path.dirname(exe))}:
        if not any(d == b or d.startswith(b + "/") for b in bound):
            argv += ["--ro-bind", d, d]
            bound.append(d)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += (["--size", str(tmpfs_mb << 20)] if "--size" in features else []) + ["--tmpfs", "/tmp"]
    argv += ["--remount-ro", "/", "--chdir", "/tmp"]
    for key, value in env.items():                  # after --clearenv
        argv += ["--setenv", key, value]
    return argv + ["--", exe, "-I", "-S", "-c", ZYGOTE_SOURCE]


@dataclass(frozen=True)
class Spec:
    """How to start one zygote."""

    argv: tuple[str, ...]
    init: dict
    use_bwrap: bool
    host_workroot: bool         # job dirs live in a host temp dir (no bubblewrap) that we create and remove
    env: dict                   # environment the zygote starts with (bubblewrap: passed on with --setenv)


def make_spec(opts: LocalOptions, use_bwrap: bool) -> Spec:
    exe, _ = python_paths()
    filt = seccomp.build_filter().hex() if seccomp.supported() else None
    # fresh mode pays for imports only when a job needs them; the plain zygote always preloads, because a job
    # dropped to uid 65534 may not be able to read a standard library under /root
    preload = list(PRELOAD) if opts.mode == "warm" or not use_bwrap else []
    if not use_bwrap and os.geteuid() == 0:
        preload += PRELOAD_ON_DEMAND
    init = {"seccomp": filt, "preload": preload}
    start_env = ZYGOTE_ENV if opts.mode == "warm" else {}
    if use_bwrap:
        bwrap, features = bwrap_features()
        init.update(workroot="/tmp/rlvr", scratch=["/tmp", "/dev/shm"])
        argv = bwrap_argv(bwrap, features, opts.tmpfs_mb, start_env)
        return Spec(tuple(argv), init, True, False, {"PATH": JOB_ENV["PATH"]})
    root = os.geteuid() == 0
    init.update(unshare_net=True, uid=SANDBOX_UID if root else None, uid_base=SANDBOX_UID_BASE if root else None)
    return Spec((exe, "-I", "-S", "-c", ZYGOTE_SOURCE), init, False, True, {**JOB_ENV, **start_env})


def host_oom_kills() -> int | None:
    """Processes the kernel's OOM killer has killed since boot (/proc/vmstat `oom_kill`, Linux >= 4.13); None
    where that is unreadable."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# -------------------------------------------------------------------------------------------- a zygote
class ZygoteError(RuntimeError):
    pass


class _Spawner:
    """Starts every zygote from one long-lived thread: bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) fires
    when the *thread* that forked it exits, so short-lived caller threads must not be that parent."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.pid = os.getpid()
        threading.Thread(target=self._loop, name="rlvr-sandbox-spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fut, args, kwargs = self.q.get()
            try:
                fut.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        fut: Future = Future()
        self.q.put((fut, args, kwargs))
        return fut.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():
            _spawner = _Spawner()
    return _spawner.popen(*args, **kwargs)


class Zygote:
    """One zygote process and its cgroups; runs jobs one at a time."""

    def __init__(self, spec: Spec, processes: int):
        self.spec = spec
        self.cg = cgroups.create()
        self.workroot = tempfile.mkdtemp(prefix="rlvr-sandbox-") if spec.host_workroot else None
        init = dict(spec.init, workroot=self.workroot or spec.init["workroot"])
        argv = list(spec.argv)
        if self.cg is not None:
            self.cg.set_pids(processes + EXTRA_PIDS)
            # the shell joins the cgroups, then becomes bwrap/python: nothing is forked outside them
            argv = ["/bin/sh", "-c", 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; '
                    'shift; exec "$@"', "sh", *self.cg.procs_files, "--", *argv]
        self.stderr = tempfile.TemporaryFile()
        self.proc = _popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=spec.env,
                           cwd="/", start_new_session=True, close_fds=True)
        self.processes = processes
        self._preludes: dict[str, str] = {}        # prelude source -> key the zygote has it under
        self._prelude_keys = itertools.count()
        self._oom_kills = self.cg.oom_kills() if self.cg is not None else 0
        self._host_oom_kills = host_oom_kills() if self.cg is None else None
        self.alive = True
        self._send(init)
        ready = self._recv(deadline=time.monotonic() + 60)
        if not ready or not ready.get("ready"):
            why = (ready or {}).get("error") or self._stderr_tail() or f"exit code {self.proc.poll()}"
            self.close()
            raise ZygoteError(f"sandbox zygote did not start: {why}")
        self.facts = ready

    # ------------------------------------------------------------------------------------------- jobs
    def run(self, job: Job) -> Result:
        if self.cg is not None:
            self.cg.set_memory(job.memory_mb + ZYGOTE_MEMORY_MB)
            if job.limits.processes != self.processes:
                self.cg.set_pids(job.limits.processes + EXTRA_PIDS)
                self.processes = job.limits.processes
        msg = {"code": job.code, "stdin": job.stdin, "files": dict(job.files or {}), "timeout_s": job.timeout_s,
               "cpu_s": job.cpu_s, "memory_mb": job.memory_mb, "file_size_mb": job.limits.file_size_mb,
               "open_files": job.limits.open_files, "processes": job.limits.processes,
               "output_bytes": job.limits.output_bytes, "env": JOB_ENV, **self._prelude_fields(job.prelude)}
        try:
            self._send(msg)
            reply = self._recv(deadline=time.monotonic() + job.timeout_s + REPLY_GRACE_S)
        except OSError:
            reply = None
        if reply is None:
            why = self._stderr_tail()
            self.close()
            return Result("error", None, reason=f"sandbox zygote died or hung during the job {why}".strip())
        if "error" in reply:
            self._preludes.clear()               # the zygote dropped its preludes too (see its `serve`)
            return Result("error", None, reason=reply["error"])
        oom = host_oom = False
        if self.cg is not None and reply["exit_code"] == -9:     # only a SIGKILL can be the OOM killer's
            kills = self.cg.oom_kills()
            oom, self._oom_kills = kills > self._oom_kills, kills
        elif reply["exit_code"] == -9:
            # No cgroup of our own: the host-wide counter. It is read only after a SIGKILL (a read per job costs
            # ~80 us), so a kill of another process since this zygote's last SIGKILLed job also counts; the job
            # runs with oom_score_adj 1000, so when the host is out of memory it is the likeliest victim.
            kills = host_oom_kills()
            host_oom = kills is not None and self._host_oom_kills is not None and kills > self._host_oom_kills
            self._host_oom_kills = kills
        status, reason = classify(reply["exit_code"], timed_out=reply["timed_out"], oom_killed=oom, host_oom=host_oom,
                                  cpu_limited=reply.get("cpu_limited", False),
                                  memory_error=reply["memory_error"], setup_failed=bool(reply["setup_error"]))
        if reply["setup_error"]:
            reason = f"{reason}: {reply['setup_error']}"
        return Result(status, reply["exit_code"], reply["stdout"], reply["stderr"], reply["stdout_truncated"],
                      reply["stderr_truncated"], round(reply["wall_s"], 4), reply["completed"], reason)

    def _prelude_fields(self, source: str) -> dict:
        """A prelude travels once per zygote; later jobs name it by key. We choose what the zygote keeps (the
        MAX_PRELUDES most recently added), so this record of its cache stays exact."""
        if not source:
            return {}
        key = self._preludes.get(source)
        if key is not None:
            return {"prelude_key": key}
        fields: dict = {}
        if len(self._preludes) >= MAX_PRELUDES:
            fields["forget_prelude"] = self._preludes.pop(next(iter(self._preludes)))
        key = self._preludes[source] = str(next(self._prelude_keys))
        return {**fields, "prelude_key": key, "prelude": source}

    # --------------------------------------------------------------------------------------- protocol
    def _send(self, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.proc.stdin.write(struct.pack(">I", len(body)) + body)
        self.proc.stdin.flush()

    def _recv(self, deadline: float) -> dict | None:
        head = self._read_exact(4, deadline)
        if head is None:
            return None
        body = self._read_exact(struct.unpack(">I", head)[0], deadline)
        return None if body is None else json.loads(body)

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        fd, chunks, got = self.proc.stdout.fileno(), [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, n - got)
            if not data:
                return None
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read()[-500:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        try:
            self.proc.stdin.close()            # EOF: the zygote kills its job (if any) and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.stderr.close()
        if self.cg is not None:
            self.cg.remove()
        if self.workroot:
            shutil.rmtree(self.workroot, ignore_errors=True)


# ------------------------------------------------------------------------------------------- the backend
@register_backend("local")
class LocalBackend:
    """Pool of warm zygotes (see the module docstring). Thread-safe; one instance per process."""

    def __init__(self, options: LocalOptions | None = None):
        self.options = options or LocalOptions.from_env()
        self._idle: list[Zygote] = []
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._spec: Spec | None = None
        self._fallback_reason = ""
        self._layers: dict[str, Layer] | None = None

    def run_batch(self, jobs: Sequence[Job], concurrency: int | None = None) -> list[Result]:
        n = min(concurrency or self.options.n_workers, len(jobs))
        if n <= 1:
            return [self._run_one(j) for j in jobs]
        with ThreadPoolExecutor(n, thread_name_prefix="rlvr-sandbox") as ex:
            return list(ex.map(self._run_one, jobs))

    def _run_one(self, job: Job) -> Result:
        try:
            z = self._acquire(job)
        except ZygoteError as e:
            return Result("error", None, reason=str(e))
        try:
            return z.run(job)
        finally:
            self._release(z)

    def _acquire(self, job: Job) -> Zygote:
        if self.options.mode == "warm":
            with self._lock:
                if self._idle:
                    return self._idle.pop()
        return self._start(job.limits.processes)

    def _release(self, z: Zygote) -> None:
        if self.options.mode == "warm" and z.alive:
            with self._lock:
                if len(self._idle) < self.options.n_workers:
                    self._idle.append(z)
                    return
        z.close()

    def _start(self, processes: int = 32) -> Zygote:
        with self._start_lock:       # only the first start chooses the spec; later ones skip this quickly
            if self._spec is None:
                return self._first_zygote(processes)
        return Zygote(self._spec, processes)

    def _first_zygote(self, processes: int) -> Zygote:
        """bubblewrap when installed and working (tried by starting a zygote with it), else the plain one."""
        bwrap, _ = bwrap_features()
        want = self.options.bwrap
        if want != "off" and bwrap is not None:
            spec = make_spec(self.options, use_bwrap=True)
            try:
                z = Zygote(spec, processes)
                self._spec = spec
                return z
            except ZygoteError as e:
                if want == "on":
                    raise
                self._fallback_reason = f"bwrap failed here: {e}"
                log.warning("sandbox: %s; continuing without bubblewrap", self._fallback_reason)
        elif want == "on":
            raise ZygoteError("RLVR_SANDBOX_BWRAP=on but bwrap is not installed (apt-get install bubblewrap)")
        else:
            self._fallback_reason = "disabled (RLVR_SANDBOX_BWRAP=off)" if want == "off" else \
                "bwrap not installed (apt-get install bubblewrap)"
        self._spec = make_spec(self.options, use_bwrap=False)     # kept even if it fails: no endless retries
        return Zygote(self._spec, processes)

    def start_workers(self, n: int | None = None) -> None:
        """Start warm zygotes now (up to `n`, default the worker count) instead of at the first jobs, so a
        batch does not wait ~0.1-0.2 s per zygote for start-up. No-op in fresh mode."""
        self.layers()                                   # the first start also picks bubblewrap or not
        if self.options.mode != "warm":
            return
        with self._lock:
            missing = min(n or self.options.n_workers, self.options.n_workers) - len(self._idle)
        started = [self._start() for _ in range(missing)]
        for z in started:
            self._release(z)

    def layers(self) -> dict[str, Layer]:
        """Which isolation layers are active here (starts one zygote to find out); logged once."""
        if self._layers is None:
            z = self._start()
            try:
                self._layers = describe_layers(z, self._fallback_reason)
            finally:
                self._release(z)
            off = [k for k, v in self._layers.items() if not v.on]
            log.info("sandbox layers: %s", ", ".join(f"{k}={'on' if v.on else 'off'}"
                                                     for k, v in self._layers.items()))
            if off:
                log.warning("sandbox layers off: %s", "; ".join(f"{k} ({self._layers[k].detail})" for k in off))
        return self._layers

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for z in idle:
            z.close()


def describe_layers(z: Zygote, fallback_reason: str) -> dict[str, Layer]:
    """The layer report of a running zygote (facts it measured + how it was started)."""
    facts, spec = z.facts, z.spec
    root = os.geteuid() == 0
    bw = spec.use_bwrap
    prefix = python_paths()[1]
    cg = z.cg.dirs if z.cg is not None else {}
    if "pids" in cg:
        plimit = Layer(True, f"pids cgroup v{cg['pids'][0].version} (max = processes + {EXTRA_PIDS})")
    elif not root or spec.init.get("uid") is not None:
        plimit = Layer(True, "RLIMIT_NPROC (the job runs as a non-root uid)")
    else:
        plimit = Layer(False, "root ignores RLIMIT_NPROC and no pids cgroup is writable")
    if bw:
        user = Layer(True, f"uid {SANDBOX_UID} in a user namespace, all capabilities dropped")
    elif facts.get("job_uid") not in (None, SANDBOX_UID):
        user = Layer(True, f"job drops from root to a uid of its zygote's own ({SANDBOX_UID_BASE} + zygote pid)")
    elif spec.init.get("uid") is not None:
        user = Layer(True, f"job drops from root to uid {SANDBOX_UID} (no uid of its own is mapped here)")
    else:
        user = Layer(False, f"job runs as the calling user (uid {os.getuid()}); it can signal the zygote")
    return {
        "bubblewrap": Layer(bw, bwrap_features()[0] if bw else fallback_reason),
        "user": user,
        "pid_namespace": Layer(bool(facts.get("pid1")), "zygote is pid 1; kill(-1) ends every job process"
                               if facts.get("pid1") else "off: descendants found via /proc and killed instead"),
        "network": Layer(bw or bool(facts.get("netns")),
                         "empty network namespace" if bw or facts.get("netns") else "host network namespace"),
        "filesystem": Layer(bw, f"read-only /usr, /lib*, /bin and {prefix}; private tmpfs /tmp; "
                            "host dirs invisible" if bw else
                            "host filesystem visible, limited by the job uid's permissions"),
        "seccomp": Layer(bool(facts.get("seccomp")), "no non-AF_UNIX sockets, namespaces, ptrace, mount, bpf, "
                         "io_uring, keyrings" if facts.get("seccomp") else "unsupported architecture"),
        "rlimits": Layer(True, "AS, CPU, FSIZE, NOFILE, NPROC, CORE=0 per job process"),
        "process_limit": plimit,
        "memory_cgroup": Layer("memory" in cg, f"memory cgroup v{cg['memory'][0].version}: job memory + "
                               f"{ZYGOTE_MEMORY_MB} MB in all" if "memory" in cg else "no writable memory cgroup"),
        "session": Layer(True, "own session/process group per job; killed as a whole after it ends"),
        "environment": Layer(True, "scrubbed: " + ", ".join(sorted(JOB_ENV))),
        "workdir": Layer(True, "fresh temp working dir per job, removed afterwards"),
    }
