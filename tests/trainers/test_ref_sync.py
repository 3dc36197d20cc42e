"""Reference refresh θ_ref ← α·θ + (1-α)·θ_ref: the formula by hand, the config rules, and a resumed run that
restores the refreshed reference from its checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlvr.trainers.ref_sync import mix_into, sync_due

REPO = Path(__file__).resolve().parents[2]


def test_mix_into_by_hand():
    policy, ref = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[1.0, 2.0]])), policy.bias.fill_(4.0)
        ref.weight.copy_(torch.tensor([[3.0, -2.0]])), ref.bias.fill_(0.0)
    mix_into(ref, policy, 0.25)            # 0.25·θ + 0.75·θ_ref
    assert ref.weight.tolist() == [[2.5, -1.0]] and ref.bias.tolist() == [1.0] and ref.weight.dtype == torch.float64
    mix_into(ref, policy, 1.0)             # hard reset
    assert ref.weight.tolist() == [[1.0, 2.0]] and ref.bias.tolist() == [4.0]
    with pytest.raises(ValueError, match="counterpart"):
        mix_into(torch.nn.Linear(3, 1), policy, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        mix_into(ref, policy, 0.0)
    assert [s for s in range(1, 8) if sync_due(s, 3)] == [3, 6] and not any(sync_due(s, 0) for s in range(1, 8))


def test_config_needs_a_reference():
    from rlvr.trainers.grpo import GRPOConfig

    with pytest.raises(ValueError, match="beta > 0"):
        GRPOConfig(ref_sync_every=2)
    GRPOConfig(ref_sync_every=2, beta=0.1)


def test_resume_restores_the_refreshed_reference(tmp_path):
    """Refresh every 2 steps (α = 0.5, beta = 0.1): a run resumed from its step-3 checkpoint logs the same step 4
    (its KL term is taken against the reference refreshed at step 2) as the uninterrupted run."""
    from test_train_e2e import SMALL, run_cli, stable

    from rlvr.trainers.logger import read_jsonl

    args = [*SMALL, "sft.enabled=false", "control.enabled=false", "grpo.beta=0.1", "grpo.ref_sync_every=2",
            "grpo.ref_sync_alpha=0.5", "grpo.keep_last=4",
            "grpo.dynamic_sampling=false"]   # every step trains (and logs its KL), whatever the samples
    ref = tmp_path / "ref"
    assert run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={ref}", *args]) == 0
    rows = read_jsonl(ref / "grpo" / "grpo_metrics.jsonl")
    assert [r.get("ref/synced") for r in rows] == [None, 1.0, None, 1.0]
    assert all(r["loss/kl"] > 0 for r in rows[1:])
    ckpts = ref / "grpo" / "checkpoints"
    assert (ckpts / "step-00000003" / "reference.pt").exists()
    # the run as if killed after step 3's checkpoint: later checkpoints and every stage after GRPO gone
    out = tmp_path / "resumed"
    shutil.copytree(ref, out)
    shutil.rmtree(out / "grpo" / "checkpoints" / "step-00000004")
    for p in out.iterdir():
        if p.name not in ("sft", "eval_start", "grpo"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for marker in (out / "grpo").glob("DONE*"):
        marker.unlink()
    shutil.rmtree(out / "grpo" / "model", ignore_errors=True)
    assert run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}", *args, "--resume"]) == 0
    a, b = (stable(read_jsonl(d / "grpo" / "grpo_metrics.jsonl")) for d in (ref, out))
    assert a == b
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, out))
    assert sa["pass@1_end"] == sb["pass@1_end"]
