"""End-to-end `rlvr train` on the tiny model: smoke run, NaN guard, bad recipes, and resume after kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.trainers.logger import read_jsonl

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "task.options={digits: 1, ops: '+', reverse_answer: true, answer_format: plain, n_test: 20, n_train: 30}",
    "task.eval_limit=12", "sft.torch_threads=1",
    "sft.examples=20", "sft.max_steps=6", "sft.batch_size=8", "sft.eval_every=3",
    "sft.stop_at_pass1=null", "sft.checkpoint_every=2", "grpo.steps=4", "grpo.prompts_per_step=3",
    "grpo.group_size=4", "grpo.max_new_tokens=12", "grpo.eval_every=2", "grpo.checkpoint_every=1",
    "grpo.max_sampling_rounds=2", "eval.n=2", "eval.ks=[1,2]", "eval.max_new_tokens=12", "control.batch_size=8",
]
# Timing and throughput keys legitimately differ between runs; everything else must match exactly.
VOLATILE = ("time/", "perf/", "verify/")


def run_cli(args: list[str]) -> int:
    return main(args)


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def test_smoke_sft_grpo_control(tmp_path):
    out = tmp_path / "run"
    assert run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}", *SMALL,
                    "control.parallel=true"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("pass@1_start", "pass@1_end", "pass@1_sft_control", "wall_s"):
        assert key in summary
        assert 0.0 <= summary[key] <= 1.0 or key == "wall_s"
    rows = read_jsonl(out / "grpo" / "grpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward/mean", "reward/integer", "outcome/correct", "outcome/unparseable", "sampling/dropped_groups",
                "time/generate_s", "time/verify_s", "time/train_s", "perf/tokens_per_s", "verify/timeouts"):
        assert key in rows[0], key
    assert any(r.get("time/sync_s", -1) >= 0 for r in rows)     # engine weight sync after each optimizer step
    assert (out / "report.md").exists() and (out / "curves.png").exists()
    assert (out / "grpo" / "model" / "config.json").exists()
    assert len(list((out / "grpo" / "checkpoints").iterdir())) == 2      # keep_last


    # The control ran in a second process beside GRPO; run after GRPO instead (the finished SFT / GRPO / eval stages
    # are reused through --resume), it logs and scores exactly the same.
    import shutil
    seq = tmp_path / "sequential"
    shutil.copytree(out, seq, ignore=shutil.ignore_patterns("control", "eval_control", "control.log"))
    assert run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={seq}", *SMALL,
                    "control.parallel=false", "--resume"]) == 0
    assert not (seq / "control.log").exists()
    assert stable(read_jsonl(seq / "control" / "control_metrics.jsonl")) == \
        stable(read_jsonl(out / "control" / "control_metrics.jsonl"))
    drop = lambda ev: {k: v for k, v in ev.items() if k != "out_dir" and not k.startswith(VOLATILE)}  # noqa: E731
    assert drop(json.loads((seq / "summary.json").read_text())["eval_control"]) == drop(summary["eval_control"])


def test_bad_recipe_key_is_one_line(tmp_path, capsys):
    code = run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), "grpo.learning_rate=1e-3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "grpo.learning_rate" in err and "unknown key" in err


def test_bad_recipe_type_and_file(tmp_path, capsys):
    assert run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), "grpo.steps=many"]) == 2
    assert "grpo.steps" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsft: [1, 2\n")
    assert run_cli(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:" in err and "invalid YAML" in err
    assert run_cli(["train", str(tmp_path / "missing.yaml")]) == 2


def test_nan_guard_names_last_good_checkpoint(tmp_path, capsys):
    import torch
    from rlvr.algos.registry import POLICY_LOSSES, register_policy_loss

    if "test_nan_after_2" not in POLICY_LOSSES:
        calls = {"n": 0}

        @register_policy_loss("test_nan_after_2")
        def _nan_loss(logp, old_logp, advantages, mask, **_):
            calls["n"] += 1
            loss = -(logp * mask)
            return (loss * float("nan") if calls["n"] > 2 else loss), {}

    out = tmp_path / "run"
    code = run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}", *SMALL, "sft.enabled=false",
                    "control.enabled=false", "grpo.policy_loss=test_nan_after_2", "grpo.dynamic_sampling=false",
                    "grpo.micro_batch=64", "grpo.mu=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "policy loss is nan" in err and "last good checkpoint" in err and "step-00000002" in err


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path):
    """kill -9 inside SFT and inside GRPO, resume each time; the final logs equal an uninterrupted run's."""
    ref = tmp_path / "ref"
    assert run_cli(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={ref}", *SMALL,
                    "control.enabled=false"]) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rlvr.cli", "train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}",
           *SMALL, "control.enabled=false", "--resume"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for stage, ckpt in (("sft", "step-00000002"), ("grpo", "step-00000002")):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 300
        while not (out / stage / "checkpoints" / ckpt).exists():
            assert proc.poll() is None, f"run ended before reaching {stage}/{ckpt}"
            assert time.time() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for stage in ("sft", "grpo"):
        a = stable(read_jsonl(ref / stage / f"{stage}_metrics.jsonl"))
        b = stable(read_jsonl(out / stage / f"{stage}_metrics.jsonl"))
        assert a == b, stage
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, out))
    assert sa["pass@1_start"] == sb["pass@1_start"] and sa["pass@1_end"] == sb["pass@1_end"]
    # no torn checkpoints: every step-* dir is complete
    for ck in (out / "grpo" / "checkpoints").iterdir():
        assert (ck / "state.json").exists() and (ck / "model" / "config.json").exists()
