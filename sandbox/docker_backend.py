"""The `docker` backend: one throw-away container per job, through the `docker` Python SDK.

Each job runs `python -I -c <bootstrap> <payload>` in a fresh container of `RLVR_SANDBOX_DOCKER_IMAGE`
(default `python:3.11-slim`) with: no network (`network_disabled`, network mode `none`), a memory cap equal
to the job's (swap included), a pids limit, a read-only root filesystem with a size-capped tmpfs /tmp as the
work dir, uid 65534, all capabilities dropped, `no-new-privileges`, and CPU/file-size/open-files ulimits.
The container is killed at the deadline and always removed. Needs a reachable docker daemon; without one
every job returns status `error` saying so. Slower than `local` (a container start per job, ~0.3-1 s).

Payload limit: code + files + stdin travel as one command-line argument, so about 120 kB per job.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from sandbox.api import Job, Result, classify, register_backend
from sandbox.local import JOB_ENV, Layer

__all__ = ["DockerOptions", "DockerBackend", "container_kwargs", "MAX_PAYLOAD"]

MAX_PAYLOAD = 120_000
_DONE, _MEMORY = "\x00rlvr-done:", "\x00rlvr-memory"

# Runs inside the container: unpack the payload into the work dir, then exec the code as __main__ and leave a
# completion marker on stderr only if the top level ran to its end (same contract as the local zygote).
BOOTSTRAP = r"""
import base64, json, os, sys, traceback
p = json.loads(base64.b64decode(sys.argv[1]))
os.makedirs("/tmp/work", exist_ok=True); os.chdir("/tmp/work")
for rel, text in p["files"].items():
    os.makedirs(os.path.dirname(rel) or ".", exist_ok=True)
    open(rel, "w").write(text)
open("/tmp/.stdin", "w").write(p["stdin"] or "")
fd = os.open("/tmp/.stdin", os.O_RDONLY); os.dup2(fd, 0); os.close(fd)
os.environ["HOME"] = os.environ["TMPDIR"] = "/tmp/work"
sys.argv = ["main.py"]; nonce = p.pop("nonce"); code = p.pop("code"); prelude = p.pop("prelude", ""); del p
rc = 0
try:
    g = {"__name__": "__main__", "__file__": "main.py"}
    if prelude:
        exec(compile(prelude, "prelude.py", "exec"), g)
    exec(compile(code, "main.py", "exec"), g)
except SystemExit as e:
    rc = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
except MemoryError:
    sys.stderr.write("\x00rlvr-memory"); traceback.print_exc(); rc = 1
except BaseException:
    traceback.print_exc(); rc = 1
else:
    sys.stdout.flush(); sys.stderr.write("\x00rlvr-done:" + nonce)
sys.stdout.flush(); sys.stderr.flush(); os._exit(rc & 0xFF)
"""


@dataclass(frozen=True)
class DockerOptions:
    image: str = "python:3.11-slim"
    workers: int = 0            # parallel containers; 0 = os.cpu_count()
    cpus: float = 1.0           # CPU share per container
    tmpfs_mb: int = 64          # size of the writable /tmp

    @classmethod
    def from_env(cls) -> "DockerOptions":
        return cls(image=os.environ.get("RLVR_SANDBOX_DOCKER_IMAGE", cls.image),
                   workers=int(os.environ.get("RLVR_SANDBOX_WORKERS", "0")))


def container_kwargs(job: Job, opts: DockerOptions, payload: str) -> dict[str, Any]:
    """Arguments of `client.containers.run` for one job (pure, so it is testable without a daemon)."""
    from docker.types import LogConfig, Ulimit

    cpu = max(1, int(job.cpu_s + 0.999))
    mem = f"{job.memory_mb}m"
    return dict(
        image=opts.image, command=["python", "-I", "-c", BOOTSTRAP, payload], detach=True,
        network_disabled=True, network_mode="none", mem_limit=mem, memswap_limit=mem,
        pids_limit=job.limits.processes + 4, read_only=True,
        tmpfs={"/tmp": f"size={opts.tmpfs_mb}m,mode=1777"}, working_dir="/tmp", user="65534:65534",
        cap_drop=["ALL"], security_opt=["no-new-privileges"], environment=dict(JOB_ENV),
        nano_cpus=int(opts.cpus * 1e9), labels={"rlvr.sandbox": "1"},
        ulimits=[Ulimit(name="cpu", soft=cpu, hard=cpu + 1),
                 Ulimit(name="fsize", soft=job.limits.file_size_mb << 20, hard=job.limits.file_size_mb << 20),
                 Ulimit(name="nofile", soft=job.limits.open_files, hard=job.limits.open_files),
                 Ulimit(name="core", soft=0, hard=0)],
        log_config=LogConfig(type="json-file", config={"max-size": str(4 * job.limits.output_bytes + 4096),
                                                       "max-file": "1"}),
    )


def encode_payload(job: Job, nonce: str) -> str:
    data = {"code": job.code, "prelude": job.prelude, "stdin": job.stdin, "files": dict(job.files or {}), "nonce": nonce}
    return base64.b64encode(json.dumps(data).encode()).decode()


@register_backend("docker")
class DockerBackend:
    def __init__(self, options: DockerOptions | None = None):
        self.options = options or DockerOptions.from_env()
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """A connected client; raises ConnectionError with the reason when no daemon answers."""
        with self._lock:
            if self._client is None:
                try:
                    import docker
                except ImportError:
                    raise ConnectionError("the docker SDK is not installed (pip install docker)") from None
                try:
                    client = docker.from_env(timeout=10)
                    client.ping()
                except Exception as e:  # noqa: BLE001 - docker raises many kinds; all mean "no daemon"
                    raise ConnectionError(f"no docker daemon answers: {e}") from None
                self._client = client
            return self._client

    def run_batch(self, jobs: Sequence[Job], concurrency: int | None = None) -> list[Result]:
        n = min(concurrency or self.options.workers or os.cpu_count() or 1, len(jobs))
        if n <= 1:
            return [self._run_one(j) for j in jobs]
        with ThreadPoolExecutor(n, thread_name_prefix="rlvr-docker") as ex:
            return list(ex.map(self._run_one, jobs))

    def _run_one(self, job: Job) -> Result:
        try:
            client = self.client()
        except ConnectionError as e:
            return Result("error", None, reason=str(e), backend="docker")
        nonce = secrets.token_hex(8)
        payload = encode_payload(job, nonce)
        if len(payload) > MAX_PAYLOAD:
            return Result("error", None, reason=f"job too large for the docker backend ({len(payload)} bytes "
                          f"encoded > {MAX_PAYLOAD})", backend="docker")
        try:
            container = client.containers.run(**container_kwargs(job, self.options, payload))
        except Exception as e:  # noqa: BLE001 - image missing, daemon error ...
            return Result("error", None, reason=f"docker could not start the job: {e}", backend="docker")
        try:
            return self._finish(container, job, nonce)
        finally:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _finish(self, container: Any, job: Job, nonce: str) -> Result:
        import time

        start, timed_out = time.monotonic(), False
        try:
            code = int(container.wait(timeout=job.timeout_s)["StatusCode"])
        except Exception:  # noqa: BLE001 - requests' ReadTimeout / ConnectionError: the deadline passed
            timed_out, code = True, -9
            container.kill()
        wall = time.monotonic() - start
        cap = job.limits.output_bytes
        out, out_trunc = _head(container.logs(stdout=True, stderr=False, stream=True), cap)
        err, err_trunc = _head(container.logs(stdout=False, stderr=True, stream=True), cap + 64)
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        completed, memory_error = f"{_DONE}{nonce}" in err, _MEMORY in err
        err = err.replace(f"{_DONE}{nonce}", "").replace(_MEMORY, "")
        exit_code = -(code - 128) if code > 128 and not timed_out else code
        status, reason = classify(exit_code, timed_out=timed_out, memory_error=memory_error, oom_killed=oom)
        return Result(status, exit_code, out, err[:cap], out_trunc, err_trunc or len(err) > cap, round(wall, 4),
                      completed and status == "ok", reason, backend="docker")

    def layers(self) -> dict[str, Layer]:
        try:
            self.client()
        except ConnectionError as e:
            return {"docker": Layer(False, str(e))}
        return {"docker": Layer(True, f"container per job from {self.options.image}"),
                "network": Layer(True, "network disabled (mode none)"),
                "filesystem": Layer(True, "read-only root, size-capped tmpfs /tmp"),
                "user": Layer(True, "uid 65534, capabilities dropped, no-new-privileges"),
                "process_limit": Layer(True, "pids limit"), "memory_cgroup": Layer(True, "memory + swap cap"),
                "rlimits": Layer(True, "cpu, fsize, nofile, core ulimits")}

    def shutdown(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _head(chunks: Any, cap: int) -> tuple[str, bool]:
    """The first `cap` bytes of a log stream (decoded) and whether there was more."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) > cap:
            return bytes(buf[:cap]).decode("utf-8", "replace"), True
    return bytes(buf).decode("utf-8", "replace"), False
