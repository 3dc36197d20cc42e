"""The trainers on a CUDA GPU (skipped without one): models and batches land on cuda:<local rank>, and a CUDA
step computes what the CPU step computes.

On a GPU box every model the trainers load goes to `rlvr.distributed.context().device` (`RLVR_DEVICE` overrides
it); batches are built on the CPU and moved to the model's device where they meet it. The rest of the suite,
run on a GPU box, exercises the same paths end to end (`rlvr train`, `rlvr run`); these tests pin the device
placement and the CPU/CUDA agreement in fp32.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[2]


def _pair(**kw):
    """The tiny model loaded twice: on the CPU and on CUDA (same weights)."""
    from rlvr.trainers.common import load_model_and_tokenizer

    cpu, tok = load_model_and_tokenizer("tiny", device="cpu", **kw)
    gpu, _ = load_model_and_tokenizer("tiny", **kw)
    return cpu, gpu, tok


def test_models_load_onto_the_gpu():
    from rlvr.distributed import context
    from rlvr.models.value_head import load_value_model
    from rlvr.trainers.common import load_model_and_tokenizer

    assert context().device.type == "cuda"
    model, _ = load_model_and_tokenizer("tiny")
    assert next(model.parameters()).is_cuda
    rm, _ = load_value_model("tiny")
    assert next(rm.parameters()).is_cuda


def test_completion_logprobs_match_cpu_in_fp32():
    from rlvr.trainers.common import completion_logprobs, pack

    cpu, gpu, tok = _pair(attn_implementation="eager")
    batch = pack([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], tok.pad_token_id)   # CPU tensors
    a, ea = completion_logprobs(cpu, batch, with_entropy=True)
    b, eb = completion_logprobs(gpu, batch, with_entropy=True)
    assert b.is_cuda
    assert (a - b.cpu()).abs().max() < 1e-4 and (ea - eb.cpu()).abs().max() < 1e-4


def test_hf_engine_greedy_matches_cpu():
    from rlvr.rollout import SamplingParams, get_engine

    cpu, gpu, tok = _pair(attn_implementation="eager")
    prompts = [f"{a}+{b}=" for a, b in [(1, 2), (3, 4), (12, 30), (7, 7), (45, 9), (0, 0)]]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    out_cpu = get_engine("hf", model=cpu, tokenizer=tok).generate(prompts, params)
    out_gpu = get_engine("hf", model=gpu, tokenizer=tok).generate(prompts, params)
    for (rc,), (rg,) in zip(out_cpu, out_gpu):
        assert rc.completion_ids == rg.completion_ids
        assert max(abs(x - y) for x, y in zip(rc.logprobs, rg.logprobs)) < 1e-3


def _grpo_step(model, tok, device_ref: bool):
    from rlvr.distributed import reference_model
    from rlvr.trainers.common import build_optimizer, pack
    from rlvr.trainers.grpo import Batch, GRPOConfig, policy_update

    cfg = GRPOConfig(mu=2, micro_batch=2, beta=0.1, bf16=False, group_size=2, tis_cap=2.0, lr=1e-3)
    packed = pack([[5, 6], [5, 6], [7, 8, 9], [7, 8, 9]], [[7, 8, 9], [10], [11, 12], [13, 14, 15]],
                  tok.pad_token_id)
    batch = Batch(packed, torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]),
                  torch.full((4, 3), -2.0), {})
    ref = reference_model(model)
    with torch.no_grad():   # move the policy off the reference so the KL term has a gradient
        for p in model.parameters():
            p.add_(0.01 * torch.sin(torch.arange(p.numel(), device=p.device, dtype=p.dtype).view_as(p)))
    metrics = policy_update(model, ref, build_optimizer(model, cfg.lr), batch, cfg)
    return metrics, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def test_grpo_update_on_cuda_matches_cpu():
    cpu, gpu, tok = _pair(attn_implementation="eager")
    m_cpu, w_cpu = _grpo_step(cpu, tok, False)
    m_gpu, w_gpu = _grpo_step(gpu, tok, True)
    for k in ("loss/total", "loss/kl", "grad/norm", "adv/mean", "rollout/logp_abs_diff"):
        assert m_gpu[k] == pytest.approx(m_cpu[k], rel=1e-3, abs=1e-5), k
    worst = max((w_cpu[k] - w_gpu[k]).abs().max().item() for k in w_cpu)
    assert worst < 1e-4


def test_sft_and_dpo_losses_on_cuda_match_cpu():
    from rlvr.trainers.dpo import PrefItem, sequence_logps
    from rlvr.trainers.sft import collate, sft_loss

    cpu, gpu, tok = _pair(attn_implementation="eager")
    batch = collate([([5, 6, 7, 8], [False, False, True, True]), ([9, 10], [False, True])], tok.pad_token_id)
    (a, na), (b, nb) = sft_loss(cpu, batch), sft_loss(gpu, batch)
    assert na == nb and b.is_cuda and abs(a.item() - b.item()) < 1e-4
    items = [PrefItem(prompt=(5, 6), first=(7, 8), second=(9,), desirable=True)]
    la, aa = sequence_logps(cpu, items, tok.pad_token_id)
    lb, ab = sequence_logps(gpu, items, tok.pad_token_id)
    assert (la - lb.cpu()).abs().max() < 1e-4 and (aa - ab.cpu()).abs().max() < 1e-4


def test_rlvr_train_grpo_and_ppo_run_on_cuda(tmp_path):
    """`rlvr train` end to end on the GPU (SFT → GRPO with bf16 autocast, a checkpoint resume) and a PPO recipe."""
    from rlvr.cli import main
    from rlvr.trainers.logger import read_jsonl

    small = ["task.options={digits: 1, ops: '+', reverse_answer: true, answer_format: plain, n_test: 8, n_train: 30}",
             "task.eval_limit=8", "sft.examples=20", "sft.max_steps=4", "sft.batch_size=8", "sft.eval_every=2",
             "sft.stop_at_pass1=null", "grpo.steps=3", "grpo.prompts_per_step=3", "grpo.group_size=4",
             "grpo.max_new_tokens=10", "grpo.eval_every=3", "grpo.checkpoint_every=1", "grpo.beta=0.05",
             "eval.n=2", "eval.ks=[1,2]", "eval.max_new_tokens=10", "control.batch_size=8"]
    out = tmp_path / "grpo"
    assert main(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}", *small]) == 0
    rows = read_jsonl(out / "grpo" / "grpo_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["grad/norm"])) for r in rows if "grad/norm" in r)
    assert 0.0 <= json.loads((out / "summary.json").read_text())["pass@1_end"] <= 1.0
    # resume from the step-2 checkpoint (CUDA RNG state included) runs the last step again
    for ck in sorted((out / "grpo" / "checkpoints").iterdir())[-1:]:
        import shutil
        shutil.rmtree(ck)
    assert main(["train", str(REPO / "recipes/r1_mini.yaml"), f"output_dir={out}", *small, "--resume"]) == 0
    ppo = tmp_path / "ppo"
    assert main(["train", str(REPO / "recipes/ppo_arithmetic.yaml"), f"output_dir={ppo}", *small[:7],
                 "ppo.steps=2", "ppo.prompts_per_step=3", "ppo.samples_per_prompt=2", "ppo.max_new_tokens=8",
                 "ppo.minibatches=2", "ppo.eval_every=2", "eval.n=2", "eval.ks=[1,2]", "eval.max_new_tokens=8"]) == 0
    assert [r["step"] for r in read_jsonl(ppo / "ppo" / "ppo_metrics.jsonl")] == [1, 2]


def test_shared_prompt_pass_on_cuda_sdpa_matches_the_plain_pass():
    """The shared-prompt forward with CUDA's SDPA kernels (the default attention there): the same log-probs and
    gradients as one pass per row, and as the CPU's eager plain pass."""
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack

    gpu, tok = load_model_and_tokenizer("tiny", attn_implementation="sdpa")
    cpu, _ = load_model_and_tokenizer("tiny", device="cpu", attn_implementation="eager")
    gpu, cpu = gpu.float().train(), cpu.float()
    prompts = ["12+34=", "5+6=", "123+4=?"]
    p_ids = [tok(p)["input_ids"] for p in prompts for _ in range(4)]
    c_ids = [tok(str(7 * i))["input_ids"] + [tok.eos_token_id] for i in range(len(p_ids))]
    batch = pack(p_ids, c_ids, tok.pad_token_id)
    grads = {}
    for share in (False, True):
        gpu.zero_grad()
        logp, ent = completion_logprobs(gpu, batch, with_entropy=True, share_prompts=share)
        (logp.sum() + 0.1 * ent.sum()).backward()
        grads[share] = (logp.detach().cpu(), torch.cat([p.grad.flatten() for p in gpu.parameters()
                                                        if p.grad is not None]).cpu())
    (lp0, g0), (lp1, g1) = grads[False], grads[True]
    assert (lp0 - lp1).abs().max() < 1e-4
    assert (g0 - g1).norm() / g0.norm() < 1e-4
    with torch.no_grad():
        ref, _ = completion_logprobs(cpu, batch, share_prompts=False)
    assert (ref - lp1).abs().max() < 1e-4
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):   # bf16: the two paths agree loosely
        a = completion_logprobs(gpu, batch, share_prompts=False)[0].float().cpu()
        b = completion_logprobs(gpu, batch, share_prompts=True)[0].float().cpu()
    assert (a - b).abs().mean() < 0.02
