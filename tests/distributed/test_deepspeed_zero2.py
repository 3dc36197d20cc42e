"""DeepSpeed ZeRO-2 on 2 CPU processes (gloo) reproduces the single-process run on the tiny model.

One `DS_ACCELERATOR=cpu deepspeed --num_gpus 2` launch runs the scenarios of `ds_worker.py` (SFT one step, SFT
resume, one GRPO policy_update with mu=2 and a KL reference, one DPO step, one PPO update
of policy + critic); the same scenarios run here in-process with plain
PyTorch. Ranks get uneven token counts and micro-batch counts, so the global-count normalisation and the
equal-backward-count rule are both exercised. Adam's first step is ~lr·sign(g), so parameters alone would not
notice a wrong gradient scale: the gradient norms are compared too.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ZERO2 = REPO / "recipes" / "deepspeed" / "zero2.json"


def _worker():
    spec = importlib.util.spec_from_file_location("ds_worker", HERE / "ds_worker.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenarios: str, out: Path, ds_config: Path, timeout: float = 240) -> None:
    """`deepspeed --num_gpus 2 ds_worker.py SCENARIOS OUT CONFIG` on CPU; fails the test with the log tail."""
    launcher = Path(sys.executable).parent / "deepspeed"
    if not launcher.exists():
        launcher = shutil.which("deepspeed")
    if not launcher:
        pytest.skip("the deepspeed launcher is not on PATH")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [str(launcher), "--num_gpus", "2", "--master_port", str(_free_port()), str(HERE / "ds_worker.py"),
           scenarios, str(out), str(ds_config)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"deepspeed launch failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    worker = _worker()
    root = tmp_path_factory.mktemp("zero2")
    for name in ("sft", "grpo_update", "dpo", "ppo_update", "sft_zero3"):
        worker.SCENARIOS[name](root / "single", None)
    launch("sft,sft_resume,grpo_update,dpo,ppo_update,sft_zero3", root / "ds", ZERO2)
    return root


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def _params(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


def _initial() -> dict[str, torch.Tensor]:
    from rlvr.trainers.common import load_model_and_tokenizer
    return {k: v.float() for k, v in load_model_and_tokenizer("tiny")[0].state_dict().items()}


def _assert_same_update(single: dict, ds: dict, init: dict, lr_steps: float) -> None:
    """Same keys; both runs moved the weights (by ~lr per Adam step) and their updates agree: relative L2 error
    of the whole update < 1e-3. (Per element, Adam's first step g/(|g|+eps) amplifies rounding where |g| ~ eps.)"""
    assert sorted(single) == sorted(ds)
    moved = max((single[k] - init[k]).abs().max().item() for k in single)
    assert moved > 0.5 * lr_steps
    upd = torch.cat([(single[k] - init[k]).flatten() for k in single])
    err = torch.cat([(single[k] - ds[k]).flatten() for k in single])
    rel = (err.norm() / upd.norm()).item()
    assert rel < 1e-3, f"relative update error {rel:.2e} (max |diff| {err.abs().max():.2e})"


def test_sft_first_step_matches_single_process(runs):
    a, b = _metrics(runs / "single" / "sft_metrics.json"), _metrics(runs / "ds" / "sft_metrics.json")
    assert b["loss/sft"][0] == pytest.approx(a["loss/sft"][0], rel=1e-5)
    assert b["grad/norm"][0] == pytest.approx(a["grad/norm"][0], rel=1e-4)
    _assert_same_update(_params(runs / "single" / "sft_params.safetensors"),
                        _params(runs / "ds" / "sft_params.safetensors"), _initial(), lr_steps=1e-2)


def test_grpo_update_matches_single_process(runs):
    a = _metrics(runs / "single" / "grpo_update_metrics.json")
    b = _metrics(runs / "ds" / "grpo_update_metrics.json")
    assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-4, abs=1e-7)
    assert b["grad/norm"] == pytest.approx(a["grad/norm"], rel=1e-4)
    _assert_same_update(_params(runs / "single" / "grpo_update_params.safetensors"),
                        _params(runs / "ds" / "grpo_update_params.safetensors"), _initial(), lr_steps=2e-2)


def test_zero2_checkpoint_is_complete_and_loadable(runs):
    from transformers import AutoModelForCausalLM

    ckpts = runs / "ds" / "sft" / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["step-00000001"]          # no temp dirs left behind
    step = ckpts / "step-00000001"
    state = json.loads((step / "state.json").read_text())
    assert state["step"] == 1 and state["world_size"] == 2
    assert (step / "rng-0.pt").exists() and (step / "rng-1.pt").exists()
    shards = sorted(p.name for p in (step / "deepspeed").iterdir())
    assert sum("optim_states" in s for s in shards) == 2                    # one optimizer partition per rank
    model = AutoModelForCausalLM.from_pretrained(step / "model")            # consolidated HF weights
    saved = _params(runs / "ds" / "sft_params.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_resume_under_zero2_equals_uninterrupted_run(runs):
    straight = _params(runs / "ds" / "sft_straight_params.safetensors")
    resumed = _params(runs / "ds" / "sft_resumed_params.safetensors")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=1e-6)
    a = _metrics(runs / "ds" / "sft_straight_metrics.json")
    b = _metrics(runs / "ds" / "sft_resumed_metrics.json")
    assert b["loss/sft"] == pytest.approx(a["loss/sft"], rel=1e-6) and len(a["loss/sft"]) == 2


def test_dpo_step_matches_single_process(runs):
    a, b = _metrics(runs / "single" / "dpo_metrics.json"), _metrics(runs / "ds" / "dpo_metrics.json")
    assert b["loss/total"][0] == pytest.approx(a["loss/total"][0], rel=1e-5)
    assert b["grad/norm"][0] == pytest.approx(a["grad/norm"][0], rel=1e-4)
    _assert_same_update(_params(runs / "single" / "dpo_params.safetensors"),
                        _params(runs / "ds" / "dpo_params.safetensors"), _initial(), lr_steps=1e-2)


def test_ppo_update_matches_single_process(runs):
    a = _metrics(runs / "single" / "ppo_update_metrics.json")
    b = _metrics(runs / "ds" / "ppo_update_metrics.json")
    assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-4)
    assert b["grad/norm"] == pytest.approx(a["grad/norm"], rel=1e-4)
    _assert_same_update(_params(runs / "single" / "ppo_update_params.safetensors"),
                        _params(runs / "ds" / "ppo_update_params.safetensors"), _initial(), lr_steps=2e-2)


def test_zero3_sft_step_matches_single_process(runs):
    """ZeRO-3 (weights partitioned; the checkpoint's model/ gathers them) with one backward per rank per step."""
    from safetensors.torch import load_file
    a = _metrics(runs / "single" / "sft_zero3_metrics.json")
    b = _metrics(runs / "ds" / "sft_zero3_metrics.json")
    assert b["loss/sft"][0] == pytest.approx(a["loss/sft"][0], rel=1e-5)
    assert b["grad/norm"][0] == pytest.approx(a["grad/norm"][0], rel=1e-4)
    gathered = load_file(str(runs / "ds" / "sft_zero3" / "checkpoints" / "step-00000001" / "model" / "model.safetensors"))
    single = _params(runs / "single" / "sft_zero3_params.safetensors")
    single = {k: v for k, v in single.items() if k in gathered}              # lm_head is tied: saved once
    _assert_same_update(single, gathered, _initial(), lr_steps=1e-2)
