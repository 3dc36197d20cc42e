"""LoRA reward models and PRMs (`lora:` of RMConfig / PRMConfig): adapters on the trunk, the head trained fully,
a merged export that the `reward_model` / `prm` verifiers load as a plain value model, and resume from the adapters.

What is checked on the tiny model (a few steps each):
- the loss falls and gradients flow;
- only adapters and the head moved: in the saved model every non-adapted weight is bit-equal to the base, and every
  adapted one equals W + (alpha/r)·B@A with the saved adapters (computed here by hand), B@A != 0;
- the verifiers' scorers (`RewardModelScorer` / `PRMScorer`: what the `reward_model` / `prm` verifiers' scoring
  server loads and runs; server == scorer is tested in test_*_verifier.py) on the export equal the un-merged model
  (base + adapters + head) on the same texts;
- 2 steps + resume to 4 gives the 4-step run's metrics.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr.distributed import LoRAConfig
from rlvr.errors import ConfigError
from rlvr.models.value_head import HEAD_FILE, load_value_model
from rlvr.trainers.checkpoint import seed_everything
from rlvr.trainers.logger import read_jsonl
from rlvr.trainers.prm import PRMConfig, SyntheticConfig, encode_steps, step_logits, train_prm
from rlvr.trainers.reward_model import RMConfig, encode_sequence, score_texts, train_reward_model

LORA = LoRAConfig(enabled=True, r=4, alpha=8.0)
QUIET = lambda s: None  # noqa: E731
PAIRS = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1 + b % 2)}
         for a in range(4) for b in range(3)]


def rm_config(tmp_path: Path, out: str, steps: int, **kw) -> RMConfig:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return RMConfig(**{**dict(data=[str(data)], eval_data=[str(data)], output_dir=str(tmp_path / out),
                              max_steps=steps, batch_size=len(PAIRS), micro_batch=6, lr=1e-2, bf16=False,
                              eval_every=0, checkpoint_every=2, max_length=32, lora=LORA), **kw})


def prm_config(tmp_path: Path, out: str, steps: int, **kw) -> PRMConfig:
    return PRMConfig(**{**dict(synthetic=SyntheticConfig(n=40, max_value=5), output_dir=str(tmp_path / out),
                               max_steps=steps, batch_size=16, micro_batch=8, lr=1e-2, bf16=False, eval_every=0,
                               checkpoint_every=2, max_length=48, eval_fraction=0.2, lora=LORA), **kw})


def start_model(kind: str):
    """The trainer's start: the tiny trunk with the head it initialises (seed 0)."""
    seed_everything(0)
    return load_value_model("tiny", expect_kind=kind, device="cpu")[0]   # compared with the saved (CPU) files


def assert_only_adapters_and_head_trained(model_dir: Path, kind: str) -> None:
    start = start_model(kind)
    base = {k: v.float() for k, v in start.backbone.state_dict().items()}
    merged = load_file(str(model_dir / "model.safetensors"))
    adapters = load_file(str(model_dir / "adapter" / "adapter_model.safetensors"))
    assert sorted(merged) == sorted(base)                               # a plain trunk: no lora_/base_layer keys
    adapted = 0
    for key, w in base.items():
        stem = key.removesuffix(".weight")
        if f"{stem}.lora_A.weight" in adapters:
            delta = (LORA.alpha / LORA.r) * adapters[f"{stem}.lora_B.weight"] @ adapters[f"{stem}.lora_A.weight"]
            assert delta.abs().max() > 0, key                           # B moved off its zero init
            torch.testing.assert_close(merged[key], w + delta, rtol=0, atol=1e-6)
            adapted += 1
        else:
            assert torch.equal(merged[key], w), key                     # frozen: bit-equal to the base
    assert adapted == 4 * 7                                             # q k v o gate up down in 4 layers
    head = load_file(str(model_dir / HEAD_FILE))
    assert not torch.allclose(head["head.weight"], start.head.weight.float())   # the head trained fully


def unmerged(model_dir: Path, kind: str):
    """Base trunk + fresh adapters, then the saved adapters and head loaded: the model as it trained."""
    model = start_model(kind).add_lora(LORA)
    model.restore_from(model_dir)
    return model.eval()


def test_lora_reward_model_trains_adapters_and_head_and_its_export_scores(tmp_path):
    from verifiers.reward_model import RewardModelScorer

    summary = train_reward_model(rm_config(tmp_path, "run", 4), log_fn=QUIET)
    rows = read_jsonl(tmp_path / "run" / "rm_metrics.jsonl")
    assert rows[-1]["loss/rm"] < rows[0]["loss/rm"] and all(r["grad/norm"] > 0 for r in rows)
    model_dir = Path(summary["model"])
    assert_only_adapters_and_head_trained(model_dir, "reward")

    model, tok = unmerged(model_dir, "reward"), load_value_model("tiny")[1]
    prompts, responses = [p["prompt"] for p in PAIRS[:4]], [p["chosen"] for p in PAIRS[:2]] + ["9", "x"]
    with torch.no_grad():
        want = score_texts(model, [encode_sequence(tok, p + r, 32) for p, r in zip(prompts, responses)],
                           tok.pad_token_id).tolist()
    assert RewardModelScorer(str(model_dir)).score(prompts, responses) == pytest.approx(want, abs=1e-5)


def test_lora_prm_trains_adapters_and_head_and_its_export_scores(tmp_path):
    from verifiers.prm import PRMScorer

    summary = train_prm(prm_config(tmp_path, "run", 4), log_fn=QUIET)
    rows = read_jsonl(tmp_path / "run" / "prm_metrics.jsonl")
    assert rows[-1]["loss/prm"] < rows[0]["loss/prm"] and all(r["grad/norm"] > 0 for r in rows)
    model_dir = Path(summary["model"])
    assert_only_adapters_and_head_trained(model_dir, "prm")

    model, tok = unmerged(model_dir, "prm"), load_value_model("tiny")[1]
    prompts, responses = ["start 2", "start 4"], ["2+3=5\n5-1=4", "4+1=5\n5-2=1\n1+1=3"]
    want = []
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            ids, ends = encode_steps(tok, p, r.split("\n"), "\n", 48)
            want.append(torch.sigmoid(step_logits(model, [ids], [ends], tok.pad_token_id)[0]).tolist())
    got = PRMScorer(str(model_dir)).step_probs(prompts, responses)
    assert len(got) == 2 and [len(g) for g in got] == [2, 3]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-5)


@pytest.mark.parametrize("kind", ["rm", "prm"])
def test_lora_resume_equals_uninterrupted_run(tmp_path, kind):
    config, train, metrics = {"rm": (rm_config, train_reward_model, "rm_metrics.jsonl"),
                              "prm": (prm_config, train_prm, "prm_metrics.jsonl")}[kind]
    train(config(tmp_path, "a", 4, eval_every=2), log_fn=QUIET)
    train(config(tmp_path, "b", 2, eval_every=2), log_fn=QUIET)
    train(config(tmp_path, "b", 4, eval_every=2), resume=True, log_fn=QUIET)   # adapters + head from step 2

    def stable(rows):
        return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rows]

    a, b = (read_jsonl(tmp_path / d / metrics) for d in "ab")
    assert [r["step"] for r in b] == [1, 2, 3, 4] and stable(a) == stable(b)


def test_bad_lora_targets_are_one_config_error(tmp_path):
    cfg = rm_config(tmp_path, "run", 1).model_copy(
        update={"lora": LoRAConfig(enabled=True, target_modules=["no_such_proj"])})
    with pytest.raises(ConfigError, match="lora.target_modules"):
        train_reward_model(cfg, log_fn=QUIET)
