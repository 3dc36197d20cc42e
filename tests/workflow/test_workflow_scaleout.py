"""`rlvr run` with LoRA (one process) and under `deepspeed --num_gpus 2` (ZeRO-2 on CPU): training stages run
on every rank, sampling stages and evals on rank 0, and rank 0 alone writes the run's files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.workflow.runner import run_workflow
from rlvr.workflow.spec import load_workflow

HERE = Path(__file__).parent
SMALL = ["stages.sft.config.max_steps=4", "stages.sft.config.eval_every=2", "stages.rl.config.steps=2",
         "stages.rl.config.eval_every=1", "eval.limit=4", "eval.n=2", "eval.ks=[1,2]"]


def test_lora_stages_save_merged_models_and_change_the_fingerprint(tmp_path):
    from transformers import AutoModelForCausalLM

    plain = load_workflow(HERE / "two_stage.yaml", [f"output_dir={tmp_path / 'p'}", *SMALL])
    lora = load_workflow(HERE / "two_stage.yaml", [f"output_dir={tmp_path / 'l'}", *SMALL, "lora.enabled=true",
                                                   "lora.r=4", "stages.rl.lora.enabled=false"])
    summary = run_workflow(lora, log=lambda m: None)
    assert summary["status"] == "complete"
    sft_dir = Path(summary["stages"][0]["model_dir"])
    AutoModelForCausalLM.from_pretrained(sft_dir)                  # a plain HF dir (merged weights)
    assert (sft_dir / "adapter").is_dir()                          # plus the adapters themselves
    assert not (Path(summary["stages"][1]["model_dir"]) / "adapter").exists()   # the stage override: no LoRA
    from rlvr.workflow.runner import WorkflowRunner
    fp = lambda wf: WorkflowRunner(wf, log=lambda m: None).fingerprint(wf.stage("sft"), 0)
    assert fp(plain) != fp(lora)


REWARD_STAGES = """
name: lora_rewards
torch_threads: 1
model: {path: tiny}
lora: {enabled: true, r: 4}
stages:
  - {name: rm, kind: rm, data: [{file: PAIRS}],
     config: {max_steps: 2, batch_size: 4, micro_batch: 4, eval_fraction: 0.0, max_length: 24, bf16: false}}
  - {name: rm_full, kind: rm, data: [{file: PAIRS}], config: {max_steps: 1, batch_size: 4, eval_fraction: 0.0,
     max_length: 24, bf16: false, lora: {enabled: false}}}
  - {name: prm, kind: prm, config: {synthetic: {n: 20}, max_steps: 2, batch_size: 4, eval_fraction: 0.0,
     max_length: 32, bf16: false}}
eval: {source: null}
"""


def test_reward_stages_take_the_run_lora_and_save_merged_models(tmp_path):
    """A run-wide `lora:` reaches the rm and prm stages (adapters on the trunk, a merged model the verifiers
    load); a stage config's own `lora:` wins over it."""
    from rlvr.models.value_head import load_value_model

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{a}+1=", "chosen": str(a + 1), "rejected": str(a)}) + "\n"
                             for a in range(8)))
    spec = tmp_path / "run.yaml"
    spec.write_text(REWARD_STAGES.replace("PAIRS", str(pairs)))
    summary = run_workflow(load_workflow(spec, [f"output_dir={tmp_path / 'out'}"]), log=lambda m: None)
    assert summary["status"] == "complete"
    dirs = {s["name"]: Path(s["model_dir"]) for s in summary["stages"]}
    for name, kind in (("rm", "reward"), ("prm", "prm")):
        assert (dirs[name] / "adapter" / "adapter_model.safetensors").exists(), name
        model, _ = load_value_model(str(dirs[name]), expect_kind=kind)          # merged: a plain value model
        assert not model.has_adapters
    assert not (dirs["rm_full"] / "adapter").exists()


@pytest.mark.distributed
def test_run_on_two_deepspeed_ranks(tmp_path):
    from tests.distributed.launch import ZERO2, deepspeed_launch

    rs = ["stages.rs.kind=rejection_sampling", "stages.rs.model=rl", "stages.rs.prompts=[train]",
          "stages.rs.config.n=2", "stages.rs.config.max_new_tokens=24", "stages.rs.config.batch_prompts=8"]
    deepspeed_launch(["--no_local_rank", "--module", "rlvr.cli", "run", HERE / "two_stage.yaml",
                      f"output_dir={tmp_path}", f"distributed.deepspeed={ZERO2}", *SMALL, *rs], timeout=400)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "complete" and [s["name"] for s in summary["stages"]] == ["sft", "rl", "rs"]
    rows = [json.loads(x) for x in (tmp_path / "stages/rl/grpo_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]                               # one writer
    assert summary["stages"][2]["metrics"]["samples"] == 2 * 40               # rank 0 sampled every prompt once
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"]["rs"]["status"] == "complete" and len(manifest["invocations"]) == 1
