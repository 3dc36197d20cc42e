"""The layer report, and that each reported layer really holds (seccomp, network, filesystem, uid)."""
from __future__ import annotations

import os
import shutil
import struct

import pytest

from sandbox import Job, seccomp
from sandbox.local import LocalBackend, LocalOptions

LAYERS = {"bubblewrap", "user", "pid_namespace", "network", "filesystem", "seccomp", "rlimits", "process_limit",
          "memory_cgroup", "session", "environment", "workdir"}


def _one(backend, code, **kw):
    return backend.run_batch([Job(code, **kw)], concurrency=1)[0]


def test_report_names_every_layer(backend):
    layers = backend.layers()
    assert set(layers) == LAYERS
    assert all(isinstance(v.on, bool) and v.detail for v in layers.values())


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")
def test_bubblewrap_is_used_when_installed(backend):
    layers = backend.layers()
    assert layers["bubblewrap"].on and layers["filesystem"].on and layers["pid_namespace"].on


def test_bwrap_off_falls_back_and_says_so():
    b = LocalBackend(LocalOptions(bwrap="off"))
    try:
        layers = b.layers()
        assert not layers["bubblewrap"].on and "RLVR_SANDBOX_BWRAP=off" in layers["bubblewrap"].detail
        assert not layers["filesystem"].on
        assert _one(b, "print('fallback works')").stdout == "fallback works\n"
    finally:
        b.shutdown()


KILLER = ("import os, signal, time\ntime.sleep(0.5)\n"
          "for d in os.listdir('/proc'):\n    if d.isdigit() and int(d) != os.getpid():\n        try:\n"
          "            os.kill(int(d), signal.SIGKILL)\n        except OSError:\n            pass\n"
          "os.kill(-1, signal.SIGKILL)\n")


@pytest.mark.parametrize("bwrap", ["off", "on"])
def test_plain_jobs_cannot_kill_each_other(bwrap):
    """A job that SIGKILLs every process it can reach, beside another zygote's job: the neighbour finishes.
    Without bubblewrap this holds because each zygote's jobs have a uid of their own (as root); with it, because
    each zygote has its own pid namespace."""
    if bwrap == "on" and shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed")
    if bwrap == "off" and os.geteuid() != 0:
        pytest.skip("not root: the jobs run as the calling user, and the layer report says so")
    b = LocalBackend(LocalOptions(mode="warm", bwrap=bwrap, workers=2))
    try:
        b.start_workers(2)
        neighbour = "import os, time\ntime.sleep(2.0)\nprint('alive', os.getuid())"
        killer, victim = b.run_batch([Job(KILLER, timeout_s=20), Job(neighbour, timeout_s=20)], concurrency=2)
        assert victim.status == "ok" and victim.stdout.startswith("alive"), (victim.status, victim.reason)
        assert killer.status in ("ok", "killed", "failed")     # kill(-1) may find no one to signal
        if bwrap == "off":
            uids = {int(_one(b, "import os; print(os.getuid())").stdout) for _ in range(4)}
            assert 65534 not in uids or "65534" in b.layers()["user"].detail
    finally:
        b.shutdown()


# ---------------------------------------------------------------------------------------------- seccomp
def test_filter_assembles_to_valid_bpf():
    if not seccomp.supported():
        pytest.skip("seccomp filter is x86_64-only")
    prog = seccomp.build_filter()
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    ks = {struct.unpack_from("<HBBI", prog, i)[3] for i in range(0, len(prog), 8)}
    assert set(seccomp.DENIED.values()) <= ks


@pytest.mark.parametrize("code, expect", [
    ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)", "PermissionError"),
    ("import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM)", "PermissionError"),
    ("import socket\na, b = socket.socketpair()\na.send(b'hi')\nprint(b.recv(2))", "b'hi'"),
    ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "print(libc.unshare(0x10000000), ctypes.get_errno())", "-1 1"),          # CLONE_NEWUSER -> EPERM
    ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())", "-1 1"),         # PTRACE_ATTACH -> EPERM
    ("import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'print(5)'], "
     "capture_output=True).stdout)", "b'5\\n'"),                              # fork + exec still work
])
def test_seccomp_denies_network_and_kernel_surface(backend, code, expect):
    if not backend.layers()["seccomp"].on:
        pytest.skip("seccomp layer is off here")
    res = _one(backend, code)
    assert expect in res.stdout + res.stderr, (res.status, res.stdout, res.stderr[-300:])


def test_no_network_even_without_seccomp(backend):
    layers = backend.layers()
    if not layers["network"].on:
        pytest.skip("network namespace layer is off here")
    res = _one(backend, "for line in open('/proc/net/dev').readlines()[2:]:\n    print(line.split(':')[0].strip())")
    assert res.status == "ok" and res.stdout.split() == ["lo"], res.stdout   # loopback only (and it is down)


def test_filesystem_outside_is_read_only_and_project_invisible(backend):
    if not backend.layers()["filesystem"].on:
        pytest.skip("filesystem layer is off here")
    here = os.path.dirname(os.path.abspath(__file__))
    res = _one(backend, f"import os\nprint(os.path.exists({here!r}))\n"
               "for p in ('/usr/x', '/x'):\n    try:\n        open(p, 'w')\n    except OSError as e:\n"
               "        print(type(e).__name__)\n")
    out = res.stdout.split()
    assert len(out) == 3 and out[0] == "False" and all(x.endswith("Error") for x in out[1:]), res.stdout
