"""The R1-mini recipe, shortened (fixed seed, fewer GRPO steps, no control): GRPO must really raise held-out
greedy pass@1 over the SFT start. The full 3-seed check is benchmarks/r1_mini_seeds.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_r1_mini_grpo_raises_greedy_pass_at_1(tmp_path):
    # One torch thread for the cold start too: make test runs two test workers, one per core.
    code = main(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={tmp_path}", "seed=0",
                 "sft.torch_threads=1", "grpo.steps=50", "control.enabled=false", "eval.n=4", "eval.ks=[1,4]"])
    assert code == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert 0.10 <= s["pass@1_start"] <= 0.30, s["pass@1_start"]        # SFT stopped on its threshold
    assert s["pass@1_end"] - s["pass@1_start"] >= 0.08, (s["pass@1_start"], s["pass@1_end"])
    assert (tmp_path / "report.md").read_text().count("greedy pass@1") >= 1
