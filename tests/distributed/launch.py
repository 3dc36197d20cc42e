"""The one way the tests start `deepspeed --num_gpus 2` on this CPU box (gloo, DeepSpeed's CPU accelerator).

    deepspeed_launch([script, args...])                               a script, e.g. ds_worker.py
    deepspeed_launch(["--no_local_rank", "--module", "rlvr.cli", ...])  a CLI command (`rlvr train`, `rlvr run`)
    run_scenarios("sft,dpo", out, ZERO2)                              ds_worker.py's scenarios on 2 ranks

Skips when deepspeed or its launcher is absent; fails the test with the log tail when the launch fails.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ZERO2 = REPO / "recipes" / "deepspeed" / "zero2.json"
ZERO3_PARTITIONED = HERE / "zero3_partitioned.json"     # zero3.json with every tensor partitioned (see its test)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_launch(args: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess:
    """`DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --master_port <free> ARGS` from the repo root, one torch thread
    per rank; returns the finished process (its return code was 0)."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    launcher = Path(sys.executable).parent / "deepspeed"
    launcher = str(launcher) if launcher.exists() else shutil.which("deepspeed")
    if not launcher:
        pytest.skip("the deepspeed launcher is not on PATH")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    port = free_port()
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(port), *map(str, args)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        # DeepSpeed's CPU shared-memory allreduce never unlinks its buffers (66 MB a rank, in RAM): drop this port's.
        for f in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
            f.unlink(missing_ok=True)
    if proc.returncode != 0:
        pytest.fail(f"deepspeed launch failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def run_scenarios(scenarios: str, out: Path, ds_config: Path, timeout: float = 300) -> None:
    """`ds_worker.py SCENARIOS OUT CONFIG` on 2 ranks: each scenario writes its results under OUT."""
    deepspeed_launch([HERE / "ds_worker.py", scenarios, out, ds_config], timeout=timeout)


def load_worker():
    """ds_worker.py as a module (the single-process reference runs call its scenarios in-process)."""
    spec = importlib.util.spec_from_file_location("ds_worker", HERE / "ds_worker.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
