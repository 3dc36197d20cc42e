"""`rlvr train` with the vLLM backend on the tiny model: GRPO runs end to end and each stage's model gets one
engine, reused by its training and evals (the pipeline closes it when the next stage loads another model)."""
from __future__ import annotations

import json

import pytest

from tests.rollout.conftest import require_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_pipeline_builds_one_engine_per_stage_model(tmp_path, monkeypatch):
    require_vllm()
    from rlvr.cli import main
    from rlvr.rollout import vllm as backend
    from tests.test_recipes import REPO, TINY

    built = []
    original = backend.VLLMEngine.__init__

    def counting_init(self, *args, **kwargs):
        built.append(kwargs.get("autocast_bf16"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(backend.VLLMEngine, "__init__", counting_init)
    overrides = [o for o in TINY if not o.startswith("rollout.")] + [
        "rollout.backend=vllm", "rollout.bf16=false", "sft.enabled=false", "control.enabled=false",
        "task.options={digits: 1, ops: '+', answer_format: plain, n_test: 4, n_train: 20}"]
    assert main(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={tmp_path}", *overrides]) == 0
    assert built == [False, False, False]      # eval_start, grpo (its 2 evals reuse it), eval_end
    assert backend._OPEN == [] and backend._PARKED == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["pass@1_end"] <= 1.0
