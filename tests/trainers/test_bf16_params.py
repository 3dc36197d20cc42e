"""bf16 parameters with fp32 master weights (rlvr.distributed.bf16_params): gradients land in fp32, updates too
small for bf16 are kept, the twin follows the master, and GRPO runs with it."""
from __future__ import annotations

import copy

import pytest
import torch

from rlvr.distributed import prepare, reference_model
from rlvr.distributed.bf16_params import BF16ParamsTrainable
from rlvr.distributed.config import DistributedConfig
from rlvr.errors import ConfigError
from rlvr.trainers.common import autocast, completion_logprobs, load_model_and_tokenizer, pack


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model_and_tokenizer("tiny", device="cpu")
    return model, tok


def _batch(tok):
    prompts = ["12+34=", "5+6="]
    p_ids = [tok(p)["input_ids"] for p in prompts for _ in range(3)]
    c_ids = [tok(str(11 * i))["input_ids"] + [tok.eos_token_id] for i in range(len(p_ids))]
    return pack(p_ids, c_ids, tok.pad_token_id)


def _trainable(model, lr=1e-3):
    return prepare(model, torch.optim.SGD(model.parameters(), lr=lr), None, grad_clip=None, bf16=True,
                   bf16_params=True)


def test_gradients_match_autocast_and_land_in_fp32(tiny):
    base, tok = tiny
    batch = _batch(tok)
    ref = copy.deepcopy(base).train()
    with autocast(True):
        completion_logprobs(ref, batch)[0].sum().backward()
    model = copy.deepcopy(base).train()
    tr = _trainable(model)
    assert isinstance(tr, BF16ParamsTrainable)
    twin = tr.compute
    assert all(p.dtype == torch.bfloat16 for p in twin.parameters())
    assert all(b.dtype == torch.float32 for b in twin.buffers() if b.is_floating_point())   # rotary tables
    with autocast(True):
        tr.backward(completion_logprobs(twin, batch)[0].sum())
    assert all(p.grad is None for p in twin.parameters())          # moved into the master
    g_ref = torch.cat([p.grad.flatten() for p in ref.parameters()])
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert g.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(g, g_ref, dim=0)
    assert cos > 0.99 and abs(g.norm() / g_ref.norm() - 1) < 0.05


def test_micro_batches_accumulate_in_fp32(tiny):
    base, tok = tiny
    model = copy.deepcopy(base).train()
    tr = _trainable(model)
    batch = _batch(tok)
    grads = []
    for n in (1, 2):
        model.zero_grad(set_to_none=True)
        for _ in range(n):
            with autocast(True):
                tr.backward(completion_logprobs(tr.compute, batch)[0].sum())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(2 * a, b) for a, b in zip(*grads))


def test_step_keeps_updates_bf16_would_round_away_and_refreshes_the_twin(tiny):
    base, tok = tiny
    model = copy.deepcopy(base).train()
    tr = _trainable(model, lr=1e-7)
    before = [p.detach().clone() for p in model.parameters()]
    twin_before = [p.detach().clone() for p in tr.compute.parameters()]
    with autocast(True):
        tr.backward(completion_logprobs(tr.compute, _batch(tok))[0].sum())
    assert tr.step() > 0
    moved = sum(int((a != p).sum()) for a, p in zip(before, model.parameters()))
    assert moved > 0                                                 # the fp32 master took the tiny update
    for p, t in zip(model.parameters(), tr.compute.parameters()):
        assert torch.equal(t, p.detach().to(torch.bfloat16))         # the twin is the master, rounded
    rounded_away = sum(int((a == t).sum()) for a, t in zip(twin_before, tr.compute.parameters()))
    assert rounded_away > 0.5 * sum(p.numel() for p in model.parameters())   # most of it is below bf16's step
    with torch.no_grad():                                            # weights changed outside step(): refresh()
        next(model.parameters()).add_(1.0)
    tr.refresh()
    assert torch.equal(next(tr.compute.parameters()), next(model.parameters()).detach().to(torch.bfloat16))


def test_twin_follows_train_and_eval_mode(tiny):
    base, _ = tiny
    model = copy.deepcopy(base)
    tr = _trainable(model)
    model.eval()
    assert not tr.compute.training
    model.train()
    assert tr.compute.training


def test_grpo_update_with_bf16_params_starts_at_zero_kl(tiny):
    from rlvr.trainers.grpo import Batch, GRPOConfig, policy_update

    base, tok = tiny
    model = copy.deepcopy(base).train()
    packed = _batch(tok)
    batch = Batch(packed, torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0]), torch.arange(6) // 3,
                  torch.zeros(packed.completion_ids.shape), {})
    cfg = GRPOConfig(mu=1, micro_batch=3, beta=0.1, group_size=3, bf16=True, bf16_params=True)
    ref = reference_model(model, param_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in ref.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    m = policy_update(model, ref, _trainable(model), batch, cfg)
    assert m["loss/kl"] == 0.0                      # the bf16 reference is exactly the bf16 twin at the start
    assert torch.isfinite(torch.tensor(m["grad/norm"])) and m["grad/norm"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_refused_where_it_cannot_apply(tiny):
    from rlvr.trainers.grpo import GRPOConfig

    base, _ = tiny
    with pytest.raises(ValueError, match="needs bf16"):
        GRPOConfig(bf16=False, bf16_params=True)
    opt = torch.optim.SGD(base.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="deepspeed"):
        prepare(base, opt, DistributedConfig(deepspeed="recipes/deepspeed/zero2.json"), grad_clip=None,
                bf16_params=True)
    with pytest.raises(ConfigError, match="float32"):
        prepare(copy.deepcopy(base).to(torch.bfloat16), opt, None, grad_clip=None, bf16_params=True)


def test_rlvr_train_with_bf16_params_resumes_to_the_same_step(tmp_path):
    """`rlvr train` with grpo.bf16_params and a KL reference; the last step re-run from the checkpoint before it
    (the twin rebuilt from the restored fp32 weights) logs exactly what the first run logged."""
    import json
    import shutil
    from pathlib import Path

    from rlvr.cli import main
    from rlvr.trainers.logger import read_jsonl

    repo = Path(__file__).resolve().parents[2]
    args = [str(repo / "recipes/r1_mini.yaml"), f"output_dir={tmp_path}",
            "task.options={digits: 1, ops: '+', reverse_answer: true, answer_format: plain, n_test: 8, n_train: 30}",
            "task.eval_limit=8", "sft.torch_threads=1", "sft.examples=20", "sft.max_steps=4", "sft.batch_size=8",
            "sft.eval_every=2", "sft.stop_at_pass1=null", "grpo.steps=3", "grpo.prompts_per_step=3",
            "grpo.group_size=4", "grpo.max_new_tokens=10", "grpo.eval_every=3", "grpo.checkpoint_every=1",
            "grpo.beta=0.05", "grpo.mu=1", "grpo.bf16_params=true", "grpo.dynamic_sampling=false", "eval.n=2", "eval.ks=[1,2]",
            "eval.max_new_tokens=10", "control.enabled=false"]
    assert main(["train", *args]) == 0
    first = read_jsonl(tmp_path / "grpo" / "grpo_metrics.jsonl")
    assert [r["step"] for r in first] == [1, 2, 3] and first[0]["loss/kl"] == 0.0 < first[2]["loss/kl"]
    assert all(r["grad/norm"] > 0 for r in first)                  # the entropy bonus trains even at zero reward
    summary = json.loads((tmp_path / "summary.json").read_text())
    shutil.rmtree(sorted((tmp_path / "grpo" / "checkpoints").iterdir())[-1])
    for done in (tmp_path / "grpo" / "model", tmp_path / "grpo" / "DONE.json", tmp_path / "summary.json"):
        shutil.rmtree(done) if done.is_dir() else done.unlink()
    assert main(["train", *args, "--resume"]) == 0
    again = read_jsonl(tmp_path / "grpo" / "grpo_metrics.jsonl")
    keep = lambda r: {k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "verify/"))}  # noqa: E731
    assert [keep(r) for r in again] == [keep(r) for r in first]
    assert json.loads((tmp_path / "summary.json").read_text())["pass@1_end"] == summary["pass@1_end"]


def test_sft_with_bf16_params_learns_tracks_autocast_and_resumes(tmp_path):
    """SFT with bf16_params: the loss falls about as with autocast, and a run resumed from its step-4 checkpoint
    ends with the same weights and logs as the uninterrupted one."""
    import shutil

    from rlvr.trainers.logger import read_jsonl
    from rlvr.trainers.sft import SFTConfig, SFTExample, train_sft

    ex = [SFTExample(f"{a}+{b}=", str(a + b)) for a in range(5) for b in range(5)]
    losses, weights = {}, {}
    for name, bp in (("autocast", False), ("bf16", True), ("resumed", True)):
        out = tmp_path / name
        if name == "resumed":
            shutil.copytree(tmp_path / "bf16", out)
            shutil.rmtree(out / "checkpoints" / "step-00000008")
        model, tok = load_model_and_tokenizer("tiny", device="cpu")
        cfg = SFTConfig(max_steps=8, batch_size=25, lr=3e-3, eval_every=0, bf16_params=bp, checkpoint_every=4,
                        keep_last=3)
        train_sft(model, tok, ex, cfg, out_dir=out, resume=name == "resumed", log_fn=lambda s: None)
        rows = read_jsonl(out / "sft_metrics.jsonl")
        losses[name] = [r["loss/sft"] for r in rows]
        weights[name] = [p.detach().clone() for p in model.parameters()]
    assert losses["bf16"][-1] < 0.6 * losses["bf16"][0]
    assert losses["bf16"] != losses["autocast"]                            # it really ran in bf16
    assert losses["bf16"][-1] == pytest.approx(losses["autocast"][-1], rel=0.1)
    assert losses["resumed"] == losses["bf16"]
    assert all(torch.equal(a, b) for a, b in zip(weights["resumed"], weights["bf16"]))


@pytest.mark.parametrize("precompute", [True, False])
def test_dpo_with_bf16_params_starts_at_zero_reward_and_learns(tmp_path, precompute):
    """The reference is scored with the policy's bf16 numerics (precomputed or live), so step 1's implicit rewards
    are exactly 0 and its DPO loss exactly log 2; the chosen-rejected margin then grows; the weights stay fp32."""
    import math

    from rlvr.trainers import dpo as D
    from rlvr.trainers.logger import read_jsonl

    model, tok = load_model_and_tokenizer("tiny", device="cpu")
    items = [D.PrefItem(prompt=tuple(tok(f"{a}+{b}=")["input_ids"]),
                        first=tuple(tok(str(a + b))["input_ids"] + [tok.eos_token_id]),
                        second=tuple(tok(str(a + b + 1))["input_ids"] + [tok.eos_token_id]), desirable=True)
             for a in range(3) for b in range(3)]
    cfg = D.DPOConfig(beta=0.5, steps=6, batch_size=len(items), micro_batch=3, lr=3e-3, bf16_params=True,
                      precompute_ref=precompute, checkpoint_every=0)
    D.train_dpo(model, tok, items, cfg, out_dir=tmp_path, log_fn=lambda s: None)
    rows = read_jsonl(tmp_path / "dpo_metrics.jsonl")
    assert rows[0]["rewards/chosen"] == 0.0 and rows[0]["rewards/rejected"] == 0.0
    assert rows[0]["loss/total"] == pytest.approx(math.log(2), abs=1e-6)
    assert rows[-1]["rewards/margins"] > 0.5 and rows[-1]["loss/total"] < rows[0]["loss/total"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _ppo(out, steps, resume=False, **over):
    from rlvr.rollout import get_engine
    from rlvr.trainers.ppo import PPOConfig, train_ppo
    from tasks.registry import get_task

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny", device="cpu")
    task = get_task("arithmetic", digits=1, ops="+", reverse_answer=True, answer_format="plain", n_test=5,
                    n_train=20)
    cfg = PPOConfig(**{**dict(steps=steps, prompts_per_step=4, samples_per_prompt=2, max_new_tokens=4,
                              ppo_epochs=1, minibatches=1, micro_batch=8, lr=1e-3, critic_lr=1e-3, kl_coef=0.05,
                              entropy_coef=0.05, bf16_params=True, eval_every=0, checkpoint_every=1), **over})
    engine = get_engine("hf", model=model, tokenizer=tok)
    train_ppo(model, tok, engine, task, task.load("train"), cfg, out_dir=out, resume=resume, log_fn=lambda s: None)
    return model


def test_ppo_with_bf16_params_is_on_policy_at_first_and_resumes(tmp_path):
    """PPO with bf16_params: the behaviour log-probs come from the same bf16 twin as the update's, so a single
    on-policy pass has ratio exactly 1 (no clipping, approx-KL 0) and step 1's KL to the bf16 reference is 0; a
    run resumed after step 1 ends with the uninterrupted run's weights and logs."""
    from rlvr.trainers.logger import read_jsonl

    straight = _ppo(tmp_path / "a", 3)
    rows = read_jsonl(tmp_path / "a" / "ppo_metrics.jsonl")
    assert all(r["loss/clipfrac"] == 0.0 and r["loss/approx_kl"] == 0.0 for r in rows)
    assert rows[0]["kl/seq_sum_mean"] == 0.0 and rows[-1]["kl/seq_sum_mean"] != 0.0
    assert all(p.dtype == torch.float32 for p in straight.parameters())
    _ppo(tmp_path / "b", 1)
    resumed = _ppo(tmp_path / "b", 3, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    keep = lambda rs: [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "verify/"))}  # noqa: E731
                       for r in rs]
    assert keep(read_jsonl(tmp_path / "b" / "ppo_metrics.jsonl")) == keep(rows)
