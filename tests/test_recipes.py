"""Every training recipe loads and validates, and runs 2 steps with the tiny model swapped in."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlvr.cli import main
from rlvr.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def train_recipes() -> list[Path]:
    """Recipes for `rlvr train` (those with an sft or grpo section); other recipe kinds have their own tests."""
    out = []
    for p in sorted(REPO.glob("recipes/**/*.yaml")):
        data = yaml.safe_load(p.read_text()) or {}
        if isinstance(data, dict) and ({"sft", "grpo", "ppo", "dpo"} & set(data)):
            out.append(p)
    return out


TINY = ["model.path=tiny", "model.dtype=float32", "rollout.backend=hf", "torch_threads=1", "sft.torch_threads=1",
        "task.eval_limit=2", "sft.max_steps=2", "sft.batch_size=4", "sft.eval_every=1", "sft.stop_at_pass1=null",
        "grpo.steps=2", "grpo.prompts_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=6",
        "grpo.micro_batch=4", "grpo.eval_every=1", "grpo.max_sampling_rounds=1", "grpo.overlong_buffer=2",
        "eval.n=2", "eval.ks=[1,2]", "eval.max_new_tokens=6", "control.batch_size=4",
        "ppo.steps=2", "ppo.prompts_per_step=2", "ppo.samples_per_prompt=2", "ppo.max_new_tokens=6",
        "ppo.micro_batch=4", "ppo.eval_every=1", "dpo.rounds=1", "dpo.prompts_per_round=2",
        "dpo.samples_per_prompt=2", "dpo.max_new_tokens=6", "dpo.dpo.steps=2", "dpo.dpo.batch_size=2"]


def test_there_are_train_recipes():
    names = {p.name for p in train_recipes()}
    assert "r1_mini.yaml" in names and len(names) >= 3


@pytest.mark.parametrize("path", train_recipes(), ids=lambda p: p.stem)
def test_recipe_validates(path):
    r = load_recipe(str(path))
    assert r.name and (r.sft.enabled or r.rl_stage is not None)


@pytest.mark.parametrize("path", train_recipes(), ids=lambda p: p.stem)
def test_recipe_two_step_smoke_on_tiny_model(path, tmp_path):
    extra = []
    r = load_recipe(str(path))
    if r.sft.enabled and r.sft.examples is not None:
        extra.append("sft.examples=8")
    assert main(["train", str(path), f"output_dir={tmp_path}", *TINY, *extra]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "pass@1_start" in summary and summary["wall_s"] > 0
