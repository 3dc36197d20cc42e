"""SmolLM2-135M-Instruct (the converted GGUF) through vLLM: sync parity in fp32, and the smollm2_gsm8k recipe
running two GRPO steps with vLLM rollouts. Slow (model conversion on first use, three engine start-ups)."""
from __future__ import annotations

import json

import pytest

from tests.rollout.conftest import require_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2():
    require_vllm()
    from rlvr.errors import RLVRError
    from rlvr.models.gguf import smollm2_dir

    try:
        return smollm2_dir()
    except RLVRError as e:
        pytest.skip(str(e))


def test_converted_dir_is_a_plain_hf_model(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template and tok("hi")["input_ids"] == [6004]


def test_smollm2_sync_parity_fp32(smollm2):
    from rlvr.commands.check_sync import check_sync

    res = check_sync(str(smollm2), prompts=3, max_new_tokens=12)
    assert res["before"]["mean_abs_diff"] > 0.05                 # stale weights are visible...
    assert res["after"]["mean_abs_diff"] <= 1e-3                 # ...and gone after the sync
    assert res["after"]["max_abs_diff"] <= 1e-2


def test_smollm2_recipe_two_grpo_steps(smollm2, tmp_path):
    from rlvr.cli import main
    from rlvr.trainers.logger import read_jsonl
    from tests.test_recipes import REPO

    small = [f"model.path={smollm2}", f"output_dir={tmp_path}", "grpo.steps=2", "grpo.prompts_per_step=2",
             "grpo.group_size=2", "grpo.max_new_tokens=16", "grpo.overlong_buffer=4", "grpo.micro_batch=4",
             "grpo.eval_every=0", "grpo.dynamic_sampling=false", "task.eval_limit=2", "eval.n=1", "eval.ks=[1]",
             "eval.max_new_tokens=16"]
    assert main(["train", str(REPO / "recipes/smollm2_gsm8k.yaml"), *small]) == 0
    rows = read_jsonl(tmp_path / "grpo" / "grpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["tis/capped_frac"] <= 1.0 for r in rows)    # bf16 sampler vs fp32 trainer, corrected
