"""Run untrusted (model-written) Python safely and fast.

    from sandbox import run, run_batch, Job, Limits
    run("print(1 + 1)", timeout_s=2).stdout                 # "2\n"
    run_batch([Job(code) for code in programs], concurrency=8)

Threat model in short (details, and the test behind each claim: docs/sandbox.md):
- covered: runaway CPU / memory / processes / threads / output / disk / file descriptors, crashes, network
  access, changing or reading host files and the parent's secrets, signalling other processes, daemons that
  outlive the job, `sys.exit(0)` / `os._exit(0)` faking a pass. Each is contained and the engine keeps going.
- not covered: kernel exploits (namespaces + seccomp, not a VM); in-process reward hacking of the test harness
  (introspection, always-equal objects); in warm mode, SysV IPC objects left for the next job of a zygote.
- layers degrade with the machine (no bubblewrap, not root, no cgroups): `layers()` says what is on, and
  `rlvr sandbox-check` runs the adversarial suite against exactly those.
"""
from sandbox.api import (STATUSES, Backend, Job, Limits, Result, Status, get_backend, list_backends,
                         register_backend, run, run_batch, shutdown_all)

__all__ = ["run", "run_batch", "Job", "Limits", "Result", "Status", "STATUSES", "Backend", "get_backend",
           "list_backends", "register_backend", "layers", "shutdown"]


def layers(backend: str = "local") -> dict:
    """Active isolation layers of a backend: name -> Layer(on, detail)."""
    return get_backend(backend).layers()


def shutdown() -> None:
    """Stop the warm workers of every backend started in this process (the next run starts new ones)."""
    shutdown_all()
