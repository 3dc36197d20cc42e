"""`rlvr train` with the PPO and DPO recipes, as a user runs them.

Fast: 2-step smoke runs of both recipes on the tiny model (online DPO, offline DPO from a JSONL file, PPO) and
the one-RL-stage rule. Slow (the demos): from R1-mini's SFT cold start on 2-digit reversed addition, DPO on
verifier-labelled pairs raises held-out greedy pass@1, and PPO with GAE raises the verifier reward. The SFT
stage runs once per module and is shared through the pipeline's resume: its finished `sft/` and `eval_start/`
stages are copied into each demo's run directory, which then skips them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.trainers.logger import read_jsonl

REPO = Path(__file__).resolve().parents[2]
PPO, DPO = str(REPO / "recipes/ppo_arithmetic.yaml"), str(REPO / "recipes/dpo_arithmetic.yaml")
TINY = ["task.options={digits: 1, ops: '+', reverse_answer: true, answer_format: plain, n_test: 6, n_train: 30}",
        "task.eval_limit=4", "sft.examples=10", "sft.max_steps=2", "sft.batch_size=4", "sft.eval_every=1",
        "sft.stop_at_pass1=null", "eval.n=2", "eval.ks=[1,2]", "eval.max_new_tokens=8"]
PPO_TINY = ["ppo.steps=2", "ppo.prompts_per_step=3", "ppo.samples_per_prompt=2", "ppo.max_new_tokens=8",
            "ppo.minibatches=2", "ppo.eval_every=1", "ppo.checkpoint_every=1"]
DPO_TINY = ["dpo.rounds=2", "dpo.prompts_per_round=4", "dpo.samples_per_prompt=2", "dpo.max_new_tokens=8",
            "dpo.dpo.steps=2", "dpo.dpo.batch_size=2", "dpo.dpo.micro_batch=2"]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_ppo_recipe_smoke(tmp_path):
    assert main(["train", PPO, f"output_dir={tmp_path}", *TINY, *PPO_TINY]) == 0
    s = summary(tmp_path)
    assert {"pass@1_start", "pass@1_end"} <= set(s) and s["stages"][-1]["name"] == "ppo"
    rows = read_jsonl(tmp_path / "ppo" / "ppo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and "eval/pass@1" in rows[-1] and "kl/coef" in rows[-1]
    assert (tmp_path / "ppo" / "model" / "config.json").exists()           # the stage model is the policy
    assert not (tmp_path / "ppo" / "model" / "critic.safetensors").exists()
    assert (tmp_path / "report.md").exists()


def test_dpo_recipe_smoke_online_and_resume(tmp_path):
    assert main(["train", DPO, f"output_dir={tmp_path}", *TINY, *DPO_TINY, "dpo.pairs=spin",
                 "dpo.target='{written_answer}'"]) == 0
    rows = read_jsonl(tmp_path / "dpo" / "dpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all("pairs/kept" in r for r in rows)
    before = summary(tmp_path)
    # a finished run resumed is a no-op that reports the same numbers
    assert main(["train", DPO, f"output_dir={tmp_path}", *TINY, *DPO_TINY, "dpo.pairs=spin",
                 "dpo.target='{written_answer}'", "--resume"]) == 0
    assert summary(tmp_path)["pass@1_end"] == before["pass@1_end"]


def test_offline_dpo_recipe_from_jsonl(tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a} + {b} =", "chosen": f"<answer>{a + b}</answer>",
                                        "rejected": f"<answer>{a + b + 1}</answer>"}) + "\n"
                            for a in range(3) for b in range(3)))
    out = tmp_path / "run"
    assert main(["train", DPO, f"output_dir={out}", *TINY, *DPO_TINY, f"dpo.data={data}", "dpo.dpo.loss=ipo"]) == 0
    rows = read_jsonl(out / "dpo" / "dpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and "rewards/margins" in rows[0]
    assert (out / "dpo" / "ref_logps.pt").exists()


def test_one_rl_stage_per_recipe(capsys):
    assert main(["train", PPO, "grpo.enabled=true"]) == 2
    err = capsys.readouterr().err
    assert "at most one RL stage" in err and "grpo, ppo" in err


# --------------------------------------------------------------------------------------------- the demos
# R1-mini's task and SFT cold start (see the recipes); fewer/cheaper evals than the full recipes.
DEMO = ["task.eval_limit=200", "sft.eval_every=20", "eval.n=2", "eval.ks=[1,2]", "ppo.steps=30"]


@pytest.fixture(scope="module")
def sft_start(tmp_path_factory) -> Path:
    """A run dir holding the finished SFT cold start and its evaluation (no RL stage)."""
    out = tmp_path_factory.mktemp("sft_start")
    assert main(["train", DPO, f"output_dir={out}", *DEMO, "dpo.enabled=false"]) == 0
    return out


def from_start(start: Path, out: Path) -> Path:
    for stage in ("sft", "eval_start"):
        shutil.copytree(start / stage, out / stage)
    return out


@pytest.mark.slow
def test_dpo_on_verifier_pairs_raises_held_out_accuracy(sft_start, tmp_path):
    out = from_start(sft_start, tmp_path / "dpo_run")
    assert main(["train", DPO, f"output_dir={out}", *DEMO, "--resume"]) == 0
    s = summary(out)
    rows = read_jsonl(out / "dpo" / "dpo_metrics.jsonl")
    assert all(r["pairs/kept"] >= 20 for r in rows), [r["pairs/kept"] for r in rows]
    assert s["pass@1_end"] - s["pass@1_start"] >= 0.05, (s["pass@1_start"], s["pass@1_end"])


@pytest.mark.slow
def test_ppo_with_gae_raises_reward(sft_start, tmp_path):
    out = from_start(sft_start, tmp_path / "ppo_run")
    assert main(["train", PPO, f"output_dir={out}", *DEMO, "--resume"]) == 0
    rows = read_jsonl(out / "ppo" / "ppo_metrics.jsonl")
    first = sum(r["reward/mean"] for r in rows[:5]) / 5
    last = sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert last - first >= 0.04, (first, last)
    s = summary(out)
    assert s["pass@1_end"] >= s["pass@1_start"], (s["pass@1_start"], s["pass@1_end"])
