"""The docker backend: its container settings (no daemon needed) and, where a daemon answers, real runs."""
from __future__ import annotations

import pytest

from sandbox import Job, Limits

docker = pytest.importorskip("docker", reason="the docker SDK is not installed (pip install docker)")

from sandbox.docker_backend import MAX_PAYLOAD, DockerBackend, DockerOptions, container_kwargs, encode_payload  # noqa: E402


def test_container_is_locked_down():
    job = Job("print(1)", timeout_s=2, memory_mb=300, limits=Limits(processes=10, open_files=20, file_size_mb=4))
    kw = container_kwargs(job, DockerOptions(image="img:1"), encode_payload(job, "n"))
    assert kw["image"] == "img:1" and kw["network_disabled"] and kw["network_mode"] == "none"
    assert kw["mem_limit"] == kw["memswap_limit"] == "300m" and kw["pids_limit"] == 14
    assert kw["read_only"] and kw["user"] == "65534:65534" and kw["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in kw["security_opt"] and "/tmp" in kw["tmpfs"]
    limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in kw["ulimits"]}
    assert limits["nofile"] == (20, 20) and limits["fsize"] == (4 << 20, 4 << 20) and limits["cpu"] == (2, 3)
    assert "HOME" not in kw["environment"] and "PATH" in kw["environment"]


def test_payload_carries_the_prelude():
    import base64
    import json

    data = json.loads(base64.b64decode(encode_payload(Job("f()", prelude="def f(): pass"), "n")))
    assert data["code"] == "f()" and data["prelude"] == "def f(): pass"


def test_oversized_job_is_an_error_not_a_crash():
    backend = DockerBackend()
    backend._client = object()            # never contacted: the size check comes first
    res = backend.run_batch([Job("x = 1\n" * MAX_PAYLOAD)])[0]
    assert res.status == "error" and "too large" in res.reason


@pytest.fixture(scope="module")
def live():
    backend = DockerBackend()
    try:
        backend.client()
    except ConnectionError as e:
        pytest.skip(str(e))
    yield backend
    backend.shutdown()


@pytest.mark.docker
def test_runs_and_contains(live):
    ok, net, loop, early = live.run_batch([
        Job("print(input())", stdin="hello"),
        Job("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)"),
        Job("while True:\n    pass", timeout_s=2),
        Job("import sys\nsys.exit(0)\nassert False"),
    ], concurrency=4)
    assert ok.status == "ok" and ok.stdout == "hello\n" and ok.completed
    assert net.status == "failed" and "Error" in net.stderr
    assert loop.status == "timeout"
    assert early.status == "ok" and not early.completed
