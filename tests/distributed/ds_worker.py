"""Scenarios run by tests/distributed/test_deepspeed_*.py: once in-process (single-process reference, plain
PyTorch) and once per rank under `deepspeed --num_gpus 2` (DeepSpeed ZeRO on gloo). Each writes its results into
OUT as JSON (losses) and safetensors (parameters); the test compares them. Launched by tests/distributed/launch.py.

    python tests/distributed/ds_worker.py SCENARIO OUT [DS_CONFIG]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def sft_examples():
    from rlvr.trainers.sft import SFTExample
    return [SFTExample(f"{a}+{b}=", str(a + b)) for a in range(4) for b in range(5)]


def run_sft(out: Path, ds: str | None, *, steps: int = 1, resume: bool = False, name: str = "sft",
            grad_accum: int = 3) -> None:
    """`steps` SFT steps (uneven token counts per rank; 3 micro-batches per step in 1 process) on the tiny model."""
    from rlvr.distributed import DistributedConfig, context
    from rlvr.trainers.checkpoint import seed_everything
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.logger import read_jsonl
    from rlvr.trainers.sft import SFTConfig, train_sft

    seed_everything(0)
    model, tok = load_model_and_tokenizer("tiny")
    cfg = SFTConfig(max_steps=steps, batch_size=10, grad_accum=grad_accum, lr=1e-2, bf16=False, eval_every=0,
                    checkpoint_every=1, keep_last=3)
    train_sft(model, tok, sft_examples(), cfg, out_dir=out / name, seed=0, resume=resume, log_fn=lambda s: None,
              dist=DistributedConfig(deepspeed=ds))
    rows = read_jsonl(out / name / "sft_metrics.jsonl") if context().is_main else []
    _write(out, name, model, {k: [r[k] for r in rows] for k in ("loss/sft", "grad/norm")})


def run_sft_resume(out: Path, ds: str | None) -> None:
    """2 SFT steps straight, and 1 step + a resume (fresh model, states from the checkpoint) to step 2."""
    run_sft(out, ds, steps=2, name="sft_straight")
    run_sft(out, ds, steps=1, name="sft_resumed")
    run_sft(out, ds, steps=2, resume=True, name="sft_resumed")


def fixed_grpo_groups(n_groups: int = 4, G: int = 4) -> list[tuple[list[int], list[list[int]], list[float]]]:
    """Deterministic (prompt ids, G completion ids of varied lengths, G rewards) per group."""
    g = torch.Generator().manual_seed(7)
    groups = []
    for k in range(n_groups):
        prompt = torch.randint(4, 70, (3 + k,), generator=g).tolist()
        comps = [torch.randint(4, 70, (2 + (k * G + i) % 5,), generator=g).tolist() for i in range(G)]
        rewards = [float((k + i) % 3 == 0) + 0.25 * i for i in range(G)]
        groups.append((prompt, comps, rewards))
    return groups


def grpo_batch(groups, pad_id: int):
    from rlvr.trainers.common import pack
    from rlvr.trainers.grpo import Batch

    prompts = [p for p, comps, _ in groups for _ in comps]
    comps = [c for _, cs, _ in groups for c in cs]
    packed = pack(prompts, comps, pad_id)
    rewards = torch.tensor([r for _, _, rs in groups for r in rs])
    gids = torch.arange(len(groups)).repeat_interleave(len(groups[0][1]))
    return Batch(packed, rewards, gids, torch.zeros(packed.completion_ids.shape), {})


PROBES = [(["3+4=", "1"], 3), (["1+1=", "12+7=", "5+", "40+2="], 7)]   # rank r: (prompts, tokens) — uneven


def probe_generation(model, tok, tr, rank: int) -> dict:
    """Greedy generation of rank `rank`'s probe (different prompt counts and lengths per rank: under ZeRO-3 a
    different number of forward passes) through an HF engine sharing the module, inside `tr.gathered()`."""
    from rlvr.distributed import sync_weights
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.hf import HFEngine

    prompts, n = PROBES[rank]
    engine = HFEngine(model, tok)
    with tr.gathered():
        sync_weights(engine, model)
        groups = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=n, min_new_tokens=n))
    return {"ids": [g[0].completion_ids for g in groups], "logprobs": [g[0].logprobs for g in groups]}


def probes(model, tok, tr) -> list[dict]:
    """Every rank's probe, in rank order: each rank runs its own (collected on rank 0); one process runs all."""
    from rlvr.distributed import context
    ctx = context()
    if ctx.distributed:
        return ctx.all_gather_object(probe_generation(model, tok, tr, ctx.rank))
    return [probe_generation(model, tok, tr, r) for r in range(len(PROBES))]


def run_grpo_update(out: Path, ds: str | None, lora: bool = False) -> None:
    """One policy_update (mu=2 optimizer steps, KL to the reference) on 4 fixed groups: all of them in one
    process, or groups rank::2 on each of 2 ranks (uneven token counts and micro-batch counts per rank), with
    per-rank greedy generation before and after (`probes`). lora: adapters, reference = adapters off."""
    from rlvr.distributed import DistributedConfig, LoRAConfig, apply_lora, context, prepare, reference_model, shard
    from rlvr.trainers.checkpoint import seed_everything
    from rlvr.trainers.common import build_optimizer, load_model_and_tokenizer
    from rlvr.trainers.grpo import GRPOConfig, policy_update

    seed_everything(0)
    model, tok = load_model_and_tokenizer("tiny")
    if lora:
        model = apply_lora(model, LoRAConfig(enabled=True, r=4, alpha=8.0))
    cfg = GRPOConfig(lr=1e-2, mu=2, micro_batch=3, beta=0.1, bf16=False, group_size=4, max_new_tokens=8)
    ref = reference_model(model)
    tr = prepare(model, build_optimizer(model, cfg.lr), DistributedConfig(deepspeed=ds), grad_clip=cfg.grad_clip)
    before = probes(model, tok, tr)
    batch = grpo_batch(shard(fixed_grpo_groups(), context()), tok.pad_token_id)
    model.train()
    m = context().reduce_metrics(policy_update(model, ref, tr, batch, cfg), sum_keys=("loss/total",))
    after = probes(model, tok, tr)
    name = "grpo_update_lora" if lora else "grpo_update"
    _write(out, name, model, {"loss/total": m["loss/total"], "grad/norm": m["grad/norm"], "probes_before": before,
                              "probes_after": after})


def run_grpo_update_lora(out: Path, ds: str | None) -> None:
    run_grpo_update(out, ds, lora=True)


def run_ppo_update(out: Path, ds: str | None) -> None:
    """One PPO update (2 epochs, one minibatch, advantages whitened over all ranks' tokens) of policy + separate
    critic on the fixed GRPO groups, split rank::2 as in run_grpo_update. Records each row's whitened advantages."""
    from rlvr.distributed import DistributedConfig, context, prepare, shard
    from rlvr.models.critic import ActorCritic, build_critic
    from rlvr.trainers.checkpoint import seed_everything
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.ppo import PPOConfig, _optimizer, ppo_update, prepare_rollout

    seed_everything(0)
    model, tok = load_model_and_tokenizer("tiny")
    cfg = PPOConfig(lr=1e-2, critic_lr=1e-2, ppo_epochs=2, minibatches=1, micro_batch=3, whiten_advantages=True,
                    bf16=False, max_new_tokens=8, kl_coef=0.0)
    ac = ActorCritic(model, build_critic(model, cfg.critic))
    tr = prepare(ac, _optimizer(ac, cfg), DistributedConfig(deepspeed=ds), grad_clip=cfg.grad_clip)
    batch = grpo_batch(shard(fixed_grpo_groups(), context()), tok.pad_token_id)
    data = prepare_rollout(ac, None, batch.packed, batch.rewards, cfg, 0.0)
    mask = data.packed.completion_mask
    adv = [data.advantages[i][mask[i]].tolist() for i in range(len(mask))]          # this rank's rows
    per_rank = context().all_gather_object([adv[k * 4:(k + 1) * 4] for k in range(len(adv) // 4)])
    W = len(per_rank)                                       # global group k sits on rank k % W, at k // W
    groups = [per_rank[k % W][k // W] for k in range(len(fixed_grpo_groups()))]
    ac.train()
    m = context().reduce_metrics(ppo_update(ac, tr, data, cfg, torch.Generator().manual_seed(0)),
                                 sum_keys=("loss/total",))
    _write(out, "ppo_update", model, {"loss/total": m["loss/total"], "grad/norm": m["grad/norm"],
                                      "advantages": groups})


RM_GROUPS = [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}, {"prompt": "2+2=", "chosen": "4", "rejected": "22"},
             {"prompt": "3+", "ranked": ["4=7", "4=8", "4=9"]}, {"prompt": "5+5=", "chosen": "10", "rejected": "1",
                                                                  "margin": 0.5},
             {"prompt": "7+1=", "chosen": "8", "rejected": "71"}]


def run_rm(out: Path, ds: str | None, lora: bool = False) -> None:
    """One Bradley-Terry reward-model step over 5 groups (a 3-way ranking and a margin among them; 3 + 2 groups
    on 2 ranks, micro-batch 2: uneven micro-batch sizes) and a held-out eval; the saved model is compared.
    lora: adapters on the trunk, the head fully trained; the saved model is merged."""
    from rlvr.distributed import DistributedConfig, LoRAConfig, context
    from rlvr.trainers.logger import read_jsonl
    from rlvr.trainers.reward_model import RMConfig, train_reward_model

    name = "rm_lora" if lora else "rm"
    data = out / "rm_data.jsonl"
    if context().is_main:
        data.write_text("".join(json.dumps(g) + "\n" for g in RM_GROUPS))
    context().barrier()
    cfg = RMConfig(data=[str(data)], eval_data=[str(data)], output_dir=str(out / name), max_steps=1, batch_size=5,
                   micro_batch=2, lr=1e-2, bf16=False, checkpoint_every=0, max_length=32,
                   lora=LoRAConfig(enabled=lora, r=4, alpha=8.0))
    train_reward_model(cfg, log_fn=lambda s: None, dist=DistributedConfig(deepspeed=ds))
    if context().is_main:
        rows = read_jsonl(out / name / "rm_metrics.jsonl")
        keys = ("loss/rm", "grad/norm", "rm/accuracy", "eval/loss")
        (out / f"{name}_metrics.json").write_text(json.dumps({k: [r[k] for r in rows] for k in keys}))


def run_rm_lora(out: Path, ds: str | None) -> None:
    run_rm(out, ds, lora=True)


PRM_TRAJECTORIES = [
    {"question": "start 2", "steps": ["2+3=5", "5-1=4"], "labels": [1, 1]},
    {"question": "start 4", "steps": ["4+1=5", "5-2=2"], "labels": [1, -1]},
    {"question": "start 1", "steps": ["1+1=2", "2+2=4", "4-3=1"], "labels": [1, None, 1]},
    {"question": "start 0", "steps": ["0+3=4"], "labels": [-1]},
    {"question": "start 3", "steps": ["3-1=2", "2+5=7", "7-7=0", "0+1=1"], "labels": [1, 1, 0, 1]}]


def run_prm(out: Path, ds: str | None) -> None:
    """One PRM step over 5 trajectories (1 to 4 steps, an unlabelled and a neutral step; 3 + 2 on 2 ranks,
    micro-batch 2: uneven labelled-step counts per rank) and a held-out eval; the saved model is compared."""
    from rlvr.distributed import DistributedConfig, context
    from rlvr.trainers.logger import read_jsonl
    from rlvr.trainers.prm import PRMConfig, train_prm

    data = out / "prm_data.jsonl"
    if context().is_main:
        data.write_text("".join(json.dumps(t) + "\n" for t in PRM_TRAJECTORIES))
    context().barrier()
    cfg = PRMConfig(data=[str(data)], eval_data=[str(data)], output_dir=str(out / "prm"), max_steps=1, batch_size=5,
                    micro_batch=2, lr=1e-2, bf16=False, checkpoint_every=0, max_length=48)
    train_prm(cfg, log_fn=lambda s: None, dist=DistributedConfig(deepspeed=ds))
    if context().is_main:
        rows = read_jsonl(out / "prm" / "prm_metrics.jsonl")
        keys = ("loss/prm", "grad/norm", "prm/accuracy", "eval/loss")
        (out / "prm_metrics.json").write_text(json.dumps({k: [r[k] for r in rows] for k in keys}))


def run_online_dpo(out: Path, ds: str | None) -> None:
    """Two SPIN rounds on 1-digit addition: each samples 4 prompts' completions from the current policy (the same
    on every rank: same seed, same weights) and runs one DPO step over the pairs (2 per rank, micro-batch 1).
    Under ZeRO-3 round 1 samples from the partitioned model that round 0's DeepSpeed engine left behind, and its
    DPO round initialises DeepSpeed again over it. Records each round's pairs, DPO loss and gradient norm."""
    from rlvr.distributed import DistributedConfig, context
    from rlvr.rollout import get_engine
    from rlvr.trainers.checkpoint import seed_everything
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.dpo import DPOConfig
    from rlvr.trainers.logger import read_jsonl
    from rlvr.trainers.online_dpo import OnlineDPOConfig, _load_items, train_online_dpo
    from tasks.registry import get_task

    seed_everything(0)
    model, tok = load_model_and_tokenizer("tiny")
    task = get_task("arithmetic", digits=1, ops="+", reverse_answer=True, answer_format="plain", n_test=5,
                    n_train=20)
    cfg = OnlineDPOConfig(rounds=2, pairs="spin", prompts_per_round=4, target="{written_answer}", max_new_tokens=3,
                          dpo=DPOConfig(steps=1, batch_size=4, micro_batch=1, lr=1e-2, bf16=False, eval_every=0,
                                        checkpoint_every=0))
    engine = get_engine("hf", model=model, tokenizer=tok)
    run = out / "online_dpo"
    train_online_dpo(model, tok, engine, task, task.load("train"), cfg, out_dir=run, log_fn=lambda s: None,
                     dist=DistributedConfig(deepspeed=ds))
    metrics: dict = {"pairs": [], "loss/total": [], "grad/norm": []}
    if context().is_main:
        for r in range(cfg.rounds):
            items, _ = _load_items(run / f"round-{r:02d}" / "pairs.pt")
            metrics["pairs"].append([[list(it.prompt), list(it.first), list(it.second)] for it in items])
            row = read_jsonl(run / f"round-{r:02d}" / "dpo_metrics.jsonl")[-1]
            metrics["loss/total"].append(row["loss/total"])
            metrics["grad/norm"].append(row["grad/norm"])
    _write(out, "online_dpo", model, metrics)


def run_dpo(out: Path, ds: str | None) -> None:
    """One DPO step over 6 fixed pairs (3 per rank, micro-batch 2: uneven micro-batch sizes), reference cached."""
    from rlvr.distributed import DistributedConfig, context
    from rlvr.trainers.checkpoint import seed_everything
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.dpo import DPOConfig, PrefItem, train_dpo
    from rlvr.trainers.logger import read_jsonl

    seed_everything(0)
    model, tok = load_model_and_tokenizer("tiny")
    g = torch.Generator().manual_seed(3)
    ids = lambda n: tuple(torch.randint(4, 70, (n,), generator=g).tolist())
    items = [PrefItem(ids(3 + k % 2), ids(2 + k % 3), ids(4 - k % 2)) for k in range(6)]
    cfg = DPOConfig(steps=1, batch_size=6, micro_batch=2, lr=1e-2, bf16=False, eval_every=0, checkpoint_every=0)
    train_dpo(model, tok, items, cfg, out_dir=out / "dpo", log_fn=lambda s: None, dist=DistributedConfig(deepspeed=ds))
    rows = read_jsonl(out / "dpo" / "dpo_metrics.jsonl") if context().is_main else []
    _write(out, "dpo", model, {k: [r[k] for r in rows] for k in ("loss/total", "grad/norm")})


def _write(out: Path, name: str, model, metrics: dict) -> None:
    """Rank 0 writes the metrics and the (merged) weights; ZeRO-3's partitioned weights are gathered first."""
    import contextlib

    from rlvr.distributed import context, merged_state_dict
    from safetensors.torch import save_file

    zero3 = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if zero3:
        import deepspeed
    with deepspeed.zero.GatheredParameters(zero3) if zero3 else contextlib.nullcontext():
        if context().is_main:
            sd = {k: v.detach().float().clone() for k, v in merged_state_dict(model).items()}
            save_file(sd, str(out / f"{name}_params.safetensors"))
            (out / f"{name}_metrics.json").write_text(json.dumps(metrics))


SCENARIOS = {"sft": run_sft, "sft_resume": run_sft_resume, "grpo_update": run_grpo_update,
             "grpo_update_lora": run_grpo_update_lora, "dpo": run_dpo, "ppo_update": run_ppo_update, "rm": run_rm,
             "rm_lora": run_rm_lora, "prm": run_prm, "online_dpo": run_online_dpo}


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    scenario, out = args[0], Path(args[1])
    ds = args[2] if len(args) > 2 else None
    out.mkdir(parents=True, exist_ok=True)
    for name in scenario.split(","):
        SCENARIOS[name](out, ds)
