"""Run untrusted (model-written) Python safely and fast. Threat model: docs/sandbox.md.

    from sandbox import run, run_batch, Job, Limits
    run("print(1 + 1)", timeout_s=2).stdout                 # "2\n"
    run_batch([Job(code) for code in programs], concurrency=8)

`layers()` reports which isolation layers are active on this machine (bubblewrap, namespaces, seccomp,
cgroups, rlimits ...); the `local` backend uses whatever exists and says what is off.
"""
from sandbox.api import (STATUSES, Backend, Job, Limits, Result, Status, get_backend, list_backends,
                         register_backend, run, run_batch)

__all__ = ["run", "run_batch", "Job", "Limits", "Result", "Status", "STATUSES", "Backend", "get_backend",
           "list_backends", "register_backend", "layers", "shutdown"]


def layers(backend: str = "local") -> dict:
    """Active isolation layers of a backend: name -> Layer(on, detail)."""
    return get_backend(backend).layers()


def shutdown() -> None:
    """Stop the warm workers of every backend started in this process (the next run starts new ones)."""
    import os

    from sandbox.api import _INSTANCES
    for (name, pid), inst in list(_INSTANCES.items()):
        if pid == os.getpid():
            inst.shutdown()
