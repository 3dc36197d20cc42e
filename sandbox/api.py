"""The sandbox API: `run` one program, `run_batch` many in parallel; a `Result` says what happened.

    res = run("print(input())", stdin="hi", timeout_s=2, memory_mb=256)
    res.status, res.exit_code, res.stdout      # "ok", 0, "hi\\n"

Status (first match wins):
    error    the sandbox itself failed (could not start, bad request); says nothing about the code
    timeout  wall-clock `timeout_s` passed (the job was killed), or the CPU-time limit hit (SIGXCPU)
    memory   a MemoryError reached the top level, or the kernel OOM-killed a job process (memory cgroup)
    killed   ended by a signal (SIGSEGV from a segfault, SIGABRT, a SIGKILL it sent itself ...)
    failed   exit code != 0 (an uncaught exception exits 1 with the traceback on stderr)
    ok       exit code 0
`completed` is stricter than `ok`: the program's top level ran to its end. `sys.exit(0)` or `os._exit(0)`
part-way gives `ok` but not `completed`, so a test harness must look at `completed` (the code verifier does).

Backends register by name (`@register_backend`); `local` (default, no daemon needed) and `docker`.
"""
from __future__ import annotations

import atexit
import importlib
import os
import signal
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Protocol, Sequence

__all__ = ["Limits", "Job", "Result", "Status", "STATUSES", "Backend", "register_backend", "get_backend",
           "list_backends", "run", "run_batch", "classify", "shutdown_all"]

Status = Literal["ok", "failed", "timeout", "memory", "killed", "error"]
STATUSES: tuple[str, ...] = ("ok", "failed", "timeout", "memory", "killed", "error")


@dataclass(frozen=True)
class Limits:
    """Per-job limits besides wall time and memory. Each maps to an rlimit of every job process."""

    cpu_s: float | None = None       # CPU seconds per process (RLIMIT_CPU); None = the wall timeout
    file_size_mb: int = 16           # largest file a job may write (RLIMIT_FSIZE)
    open_files: int = 64             # open file descriptors (RLIMIT_NOFILE)
    processes: int = 32              # processes + threads (RLIMIT_NPROC; also the pids cgroup's max)
    output_bytes: int = 1 << 16      # stdout and stderr are each cut to this many bytes (flag set)

    def __post_init__(self) -> None:
        for name in ("file_size_mb", "open_files", "processes", "output_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")
        if self.cpu_s is not None and self.cpu_s <= 0:
            raise ValueError(f"Limits.cpu_s must be > 0, got {self.cpu_s}")


@dataclass(frozen=True)
class Job:
    """One program to run: Python source `code`, optional stdin text and files (relative path -> text) placed
    in its fresh working directory. `prelude` is *trusted* source (a test harness, never model output) run
    before `code` in the same namespace; the local backend compiles each distinct prelude once per worker
    instead of once per job."""

    code: str
    stdin: str | None = None
    files: Mapping[str, str] | None = None
    timeout_s: float = 10.0
    memory_mb: int = 512             # address-space cap per process (RLIMIT_AS), interpreter included
    limits: Limits = field(default_factory=Limits)
    prelude: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not isinstance(self.prelude, str):
            bad = "code" if not isinstance(self.code, str) else "prelude"
            raise TypeError(f"Job.{bad} must be str, got {type(getattr(self, bad)).__name__}")
        if self.timeout_s <= 0:
            raise ValueError(f"Job.timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_mb < 32:
            raise ValueError(f"Job.memory_mb must be >= 32 (the interpreter needs it), got {self.memory_mb}")
        for rel in self.files or {}:
            parts = rel.replace("\\", "/").split("/")
            if not rel or rel.startswith("/") or ".." in parts:
                raise ValueError(f"Job.files: path {rel!r} must be relative and stay inside the work dir")

    @property
    def cpu_s(self) -> float:
        return self.limits.cpu_s if self.limits.cpu_s is not None else self.timeout_s


@dataclass(frozen=True)
class Result:
    status: Status
    exit_code: int | None            # negative = killed by that signal (subprocess convention)
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_s: float = 0.0
    completed: bool = False          # the top level ran to its end (see the module docstring)
    reason: str = ""                 # one line for humans: why this status
    backend: str = "local"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(exit_code: int | None, *, timed_out: bool, memory_error: bool = False, oom_killed: bool = False,
             setup_failed: bool = False, cpu_limited: bool = False, host_oom: bool = False) -> tuple[Status, str]:
    """(status, reason) from what a backend observed; one table for every backend.
    cpu_limited: a SIGKILL that came with the job's CPU seconds used up (RLIMIT_CPU's hard limit).
    host_oom: a SIGKILL while the kernel's OOM killer acted on the whole host (no memory cgroup of our own)."""
    if setup_failed or exit_code is None:
        return "error", "the sandbox could not run the job"
    if timed_out:
        return "timeout", "wall-clock limit reached; job killed"
    if exit_code == -signal.SIGXCPU:
        return "timeout", "CPU-time limit reached (SIGXCPU)"
    if cpu_limited:
        return "timeout", "CPU-time limit reached (hard limit, SIGKILL)"
    if oom_killed:
        return "memory", "killed by the kernel OOM killer (memory cgroup limit)"
    if host_oom and exit_code == -signal.SIGKILL:
        return "memory", ("killed by the kernel OOM killer: the host ran out of memory (jobs are its first choice, "
                          "oom_score_adj 1000)")
    if memory_error:
        return "memory", "MemoryError (address-space limit)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return "killed", f"killed by {name}"
    if exit_code == 0:
        return "ok", ""
    return "failed", f"exit code {exit_code}"


class Backend(Protocol):
    name: str

    def run_batch(self, jobs: Sequence[Job], concurrency: int | None = None) -> list[Result]: ...

    def layers(self) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...


_BACKENDS: dict[str, type] = {}
_INSTANCES: dict[tuple[str, int], Any] = {}
_MODULES = ("sandbox.local", "sandbox.docker_backend")


def register_backend(name: str):
    """Class decorator: `@register_backend("local")`. A duplicate name raises."""

    def deco(cls):
        if name in _BACKENDS and _BACKENDS[name] is not cls:
            raise ValueError(f"sandbox backend {name!r} is already registered by {_BACKENDS[name]!r}")
        _BACKENDS[name] = cls
        cls.name = name
        return cls

    return deco


def list_backends() -> list[str]:
    for mod in _MODULES:
        importlib.import_module(mod)
    return sorted(_BACKENDS)


def get_backend(name: str = "local") -> Backend:
    """The shared instance of a backend in this process (a forked child gets its own)."""
    key = (name, os.getpid())
    if key not in _INSTANCES:
        if name not in list_backends():
            raise KeyError(f"unknown sandbox backend {name!r}; known: {', '.join(list_backends())}")
        if not _INSTANCES:
            atexit.register(shutdown_all)
        _INSTANCES[key] = _BACKENDS[name]()
    return _INSTANCES[key]


def shutdown_all() -> None:
    """Stop the workers of every backend this process started (the next run starts new ones)."""
    for (_, pid), inst in list(_INSTANCES.items()):
        if pid == os.getpid():
            inst.shutdown()


def run(code: str, *, stdin: str | None = None, files: Mapping[str, str] | None = None, timeout_s: float = 10.0,
        memory_mb: int = 512, limits: Limits | None = None, backend: str = "local", prelude: str = "") -> Result:
    """Run one Python program in the sandbox (after the trusted `prelude`, see `Job`); never raises for anything
    the program does."""
    job = Job(code, stdin=stdin, files=files, timeout_s=timeout_s, memory_mb=memory_mb, limits=limits or Limits(),
              prelude=prelude)
    return get_backend(backend).run_batch([job], concurrency=1)[0]


def run_batch(jobs: Sequence[Job | str], *, concurrency: int | None = None, backend: str = "local",
              **job_options: Any) -> list[Result]:
    """Run many programs, at most `concurrency` at once (default: the backend's worker count); results come
    back in the order of `jobs`. Plain strings become `Job(code, **job_options)`."""
    if job_options and any(isinstance(j, Job) for j in jobs):
        raise ValueError(f"run_batch: options {sorted(job_options)} apply to plain code strings, not to Jobs")
    built = [j if isinstance(j, Job) else Job(j, **job_options) for j in jobs]
    return get_backend(backend).run_batch(built, concurrency=concurrency)
