"""The adversarial suite: programs that try to break out of, or take down, the sandbox.

Each `Case` is one attack with a host-side check. A case is *contained* when (1) its result status is one of
`expect`, (2) its own check finds the host untouched (files intact, no listener connection, no secret in the
output, no process left over ...), and (3) the sandbox still runs a trivial job afterwards. Used by
`tests/sandbox/test_adversarial.py` (one test per case) and by `rlvr sandbox-check`.

A case lists the layers it relies on (`needs`, any one suffices); where none of them is active on this
machine the case is reported as skipped with that reason rather than failed, because the layer report
already says it is off.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sandbox.api import Job, Limits, Result

__all__ = ["Case", "Probe", "Outcome", "CASES", "run_case", "run_suite"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Probe:
    """Host-side fixtures of one case: things the attack aims at, made fresh per case."""

    token: str = field(default_factory=lambda: "rlvr" + secrets.token_hex(5))
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rlvr-victim-")))
    port: int = 0
    connections: int = 0
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    victim: subprocess.Popen | None = None
    _sock: socket.socket | None = None

    @property
    def file(self) -> Path:
        return self.dir / "victim.txt"

    @property
    def sleep_arg(self) -> str:
        """A unique argument for /bin/sleep, so a leftover process can be found by its command line."""
        return f"{300 + int(self.token[-4:], 16) % 600}.{int(self.token[4:9], 16)}"

    def __enter__(self) -> "Probe":
        os.chmod(self.dir, 0o755)
        self.file.write_text(self.secret)
        os.chmod(self.file, 0o600)
        return self

    def listen(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def start_victim(self) -> None:
        self.victim = subprocess.Popen(["sleep", "120"])

    def leftovers(self) -> list[int]:
        """Host pids whose comm or command line carries this case's token / sleep argument."""
        found = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                comm = (p / "comm").read_text().strip()
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if comm == self.token[:15] or self.sleep_arg.encode() in cmd:
                found.append(int(p.name))
        return found

    def __exit__(self, *exc: Any) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self.victim is not None:
            self.victim.kill()
            self.victim.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


Check = Callable[[Result, Probe], str | None]   # None = host untouched; else what went wrong


@dataclass(frozen=True)
class Case:
    name: str
    threat: str
    code: str                                   # str.format'ed with the Probe's fields
    expect: tuple[str, ...]
    check: Check | None = None
    needs: tuple[str, ...] = ()                 # layers, any one of which must be on
    timeout_s: float = 2.0
    memory_mb: int = 256
    setup: tuple[str, ...] = ()                 # Probe methods to call first: "listen", "start_victim"
    secret_env: bool = False                    # put the secret in the parent's environment first


@dataclass(frozen=True)
class Outcome:
    name: str
    contained: bool | None                      # None = skipped
    status: str
    detail: str


# ------------------------------------------------------------------------------------------------- checks
def _no_leftovers(res: Result, p: Probe) -> str | None:
    time.sleep(0.05)
    left = p.leftovers()
    return f"processes outlived the job: {left}" if left else None


def _victim_intact(res: Result, p: Probe) -> str | None:
    if not p.file.exists() or p.file.read_text() != p.secret:
        return f"{p.file} was deleted or changed"
    extra = sorted(set(os.listdir(p.dir)) - {"victim.txt"})
    if extra:
        return f"files appeared in {p.dir}: {extra}"
    for path in (REPO / f"pwned-{p.token}", Path("/etc") / f"pwned-{p.token}", Path(f"/tmp/pwned-{p.token}")):
        if path.exists():
            path.unlink()
            return f"{path} was created"
    return None


def _no_secret(res: Result, p: Probe) -> str | None:
    return "the secret reached the job's output" if p.secret in res.stdout + res.stderr else None


def _no_connection(res: Result, p: Probe) -> str | None:
    time.sleep(0.05)
    if p.connections:
        return f"the host listener accepted {p.connections} connection(s)"
    return None if "CONNECTED" not in res.stdout else "the job reports a connection"


def _victim_alive(res: Result, p: Probe) -> str | None:
    return None if p.victim is not None and p.victim.poll() is None else "the host victim process was killed"


def _not_completed(res: Result, p: Probe) -> str | None:
    return "an early exit counted as a completed run" if res.completed else None


def _output_capped(res: Result, p: Probe) -> str | None:
    if not res.stdout_truncated or len(res.stdout.encode()) > Limits().output_bytes:
        return f"stdout not capped ({len(res.stdout)} chars, truncated={res.stdout_truncated})"
    return None


def _all(*checks: Check) -> Check:
    def run(res: Result, p: Probe) -> str | None:
        return next((msg for c in checks if (msg := c(res, p))), None)
    return run


# -------------------------------------------------------------------------------------------------- cases
_SET_COMM = "import ctypes\nctypes.CDLL(None).prctl(15, b'{token}', 0, 0, 0)\n"

CASES: tuple[Case, ...] = (
    Case("fork_bomb", "exhaust the process table", _SET_COMM +
         "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
         ("timeout", "killed", "failed"), _no_leftovers, needs=("process_limit",)),
    Case("memory_bomb", "exhaust host memory", "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))\n",
         ("memory",)),
    Case("thread_bomb", "exhaust threads", "import threading, time\nn = 0\ntry:\n    while True:\n"
         "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\n"
         "except (RuntimeError, MemoryError) as e:\n    print('stopped at', n)\n",
         ("ok", "failed", "memory"), lambda r, p: None if "stopped at" in r.stdout else "threads were not capped"),
    Case("infinite_loop", "never finish", "while True:\n    pass\n", ("timeout",),
         lambda r, p: None if r.wall_s < 3.0 else f"ran {r.wall_s:.1f}s past its 2 s deadline", timeout_s=1.0),
    Case("deep_recursion", "overflow the C stack (repr of a list nested 200,000 deep)",
         "import sys\nsys.setrecursionlimit(10 ** 7)\nx = []\nfor _ in range(2 * 10 ** 5):\n    x = [x]\n"
         "print(len(repr(x)))\n", ("killed", "failed", "memory"), timeout_s=5.0),
    Case("segfault", "crash the interpreter", "import ctypes\nctypes.string_at(0)\n", ("killed",)),
    Case("huge_stdout", "flood the parent's memory through stdout",
         "import sys\nsys.stdout.write('x' * (64 << 20))\n", ("ok",), _output_capped, memory_mb=512),
    Case("write_outside", "change files outside the work dir",
         "import os, shutil\nfor act in (lambda: os.remove('{file}'), lambda: open('{file}', 'w').write('x'),\n"
         "            lambda: open('{dir}/new.txt', 'w').write('x'), lambda: shutil.rmtree('{dir}'),\n"
         "            lambda: open('{repo}/pwned-{token}', 'w').write('x'),\n"
         "            lambda: open('/etc/pwned-{token}', 'w').write('x')):\n"
         "    try:\n        act()\n    except OSError as e:\n        print(type(e).__name__)\n",
         ("ok", "failed"), _victim_intact, needs=("filesystem", "user")),
    Case("disk_fill", "fill the host disk with many small files",
         "i = 0\ntry:\n    while True:\n        open(f'f{{i}}', 'wb').write(b'x' * (1 << 20))\n        i += 1\n"
         "except OSError as e:\n    print('stopped after', i, 'MB:', e)\n", ("ok", "failed", "timeout"),
         lambda r, p: None if "stopped after" in r.stdout else "writes were not capped",
         needs=("filesystem",), timeout_s=5.0),
    Case("read_secrets", "read the parent's secrets (environment, files, /proc)",
         "import os\nprint(dict(os.environ))\nfor f in ('/proc/1/environ', '/proc/self/environ', "
         "'/proc/{ppid}/environ', '{file}'):\n    try:\n        print(open(f, 'rb').read())\n"
         "    except OSError as e:\n        print(f, type(e).__name__)\n",
         ("ok", "failed"), _no_secret, needs=("user",), secret_env=True),
    Case("kill_others", "kill the parent, the zygote or other host processes",
         "import os, signal\nfor pid in (os.getppid(), 1, {ppid}, {victim_pid}):\n    try:\n"
         "        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n        print(pid, type(e).__name__)\n"
         "for d in os.listdir('/proc'):\n    if d.isdigit() and int(d) != os.getpid():\n        try:\n"
         "            os.kill(int(d), signal.SIGKILL)\n        except OSError:\n            pass\n"
         "os.kill(-1, signal.SIGKILL)\n", ("ok", "failed", "killed"), _victim_alive,
         needs=("pid_namespace", "user"), setup=("start_victim",)),
    Case("loopback_socket", "reach a host service over the network",
         "import socket\nfor make in (lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1),\n"
         "             lambda: socket.create_connection(('localhost', {port}), timeout=1)):\n"
         "    try:\n        make()\n        print('CONNECTED')\n    except OSError as e:\n"
         "        print(type(e).__name__, e)\n", ("ok", "failed"), _no_connection,
         needs=("network", "seccomp"), setup=("listen",)),
    Case("fd_exhaustion", "run out of file descriptors",
         "fs = []\nwhile True:\n    fs.append(open('/dev/null'))\n", ("failed",),
         lambda r, p: None if "Too many open files" in r.stderr else "no EMFILE: the fd limit did not hold"),
    Case("daemon_grandchild", "leave a daemon behind that outlives the job",
         "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
         "        os.execv('/bin/sleep', ['/bin/sleep', '{sleep_arg}'])\n    os._exit(0)\ntime.sleep(0.3)\n"
         "print('parent done')\n", ("ok",), _no_leftovers),
    Case("fake_success_sys_exit", "stop with exit code 0 before the failing tests run",
         "import sys\nsys.exit(0)\nassert False, 'tests'\n", ("ok",), _not_completed),
    Case("fake_success_os_exit", "os._exit(0) before the failing tests run",
         "import os, sys\nsys.stdout.flush()\nos._exit(0)\nassert False, 'tests'\n", ("ok",), _not_completed),
)


# ---------------------------------------------------------------------------------------------- running
def run_case(case: Case, backend: Any, layers: dict[str, Any] | None = None) -> Outcome:
    """Run one case on `backend` (an object with `run_batch`); see the module docstring for 'contained'."""
    layers = layers if layers is not None else backend.layers()
    if case.needs and not any(getattr(layers.get(n), "on", False) for n in case.needs):
        return Outcome(case.name, None, "skipped", f"needs one of these layers, all off here: {case.needs}")
    with Probe() as probe:
        for step in case.setup:
            getattr(probe, step)()
        fields = {"token": probe.token, "dir": probe.dir, "file": probe.file, "port": probe.port,
                  "repo": REPO, "ppid": os.getpid(), "sleep_arg": probe.sleep_arg,
                  "victim_pid": probe.victim.pid if probe.victim else os.getpid()}
        env_key = f"RLVR_TEST_SECRET_{probe.token.upper()}"
        if case.secret_env:       # zygotes started from now on are children of a parent holding a secret
            os.environ[env_key] = probe.secret
            backend.shutdown()
        try:
            job = Job(case.code.format(**fields), timeout_s=case.timeout_s, memory_mb=case.memory_mb)
            res = backend.run_batch([job], concurrency=1)[0]
        finally:
            os.environ.pop(env_key, None)
        problem = None
        if res.status not in case.expect:
            problem = f"status {res.status!r} ({res.reason}), expected one of {case.expect}"
        problem = problem or (case.check(res, probe) if case.check else None) or _no_leftovers(res, probe)
    after = backend.run_batch([Job("print('alive')", timeout_s=10)], concurrency=1)[0]
    if problem is None and (after.status != "ok" or after.stdout != "alive\n"):
        problem = f"the sandbox did not recover: next job gave {after.status} ({after.reason})"
    return Outcome(case.name, problem is None, res.status, problem or res.reason or "contained")


def run_suite(backend: Any, cases: tuple[Case, ...] = CASES) -> list[Outcome]:
    layers = backend.layers()
    return [run_case(c, backend, layers) for c in cases]
