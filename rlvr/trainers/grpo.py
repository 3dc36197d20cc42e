"""GRPO and its relatives (Dr. GRPO, RLOO, REINFORCE++, DAPO tricks) in one straight training step.

How this departs from textbook GRPO (Shao et al. 2024, arXiv:2402.03300) — every departure is a config knob:
- the advantage estimator is looked up by name (`grpo`, `dr_grpo`, `rloo`, `reinforce_pp`; rlvr/algos);
- clip-higher (separate clip_low/clip_high) and optional dual clip (DAPO, arXiv:2503.14476);
- dynamic sampling: groups whose rewards have zero spread carry no signal and are dropped, and sampling goes on
  (bounded rounds, each optionally over-sampled, surplus groups trimmed) until the batch is full (DAPO);
- overlong completions can be masked out of the loss or softly penalised (DAPO);
- the KL to a frozen reference is optional (beta=0 loads no reference), as a loss term or a reward penalty;
- loss aggregation mode is a knob (token_mean / seq_mean_token_sum / seq_mean_token_mean / dr_grpo);
- the policy loss is looked up by name too (`ppo_clip`, `gspo`, `cispo`), each pass over the batch can be several
  optimizer steps (`minibatches`), only the highest-entropy tokens can carry the policy loss
  (`top_entropy_quantile`), and the KL reference can be refreshed from the policy (`ref_sync_every`)
  (docs/grpo.md).
The trainer never branches on an algorithm's name; it only looks names up.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field, model_validator

from rlvr.algos import aggregate_loss, get_advantage, get_kl, get_policy_loss, high_entropy_mask, tis_weights
from rlvr.distributed import DistributedConfig, context, prepare, reference_model, sync_weights
from rlvr.distributed.context import even_slices
from rlvr.distributed.trainable import as_trainable
from rlvr.envs.config import MultiTurnConfig
from rlvr.models.shared_prompt import ShareSetting
from rlvr.errors import ConfigError
from rlvr.trainers.checkpoint import atomic_write_json
from rlvr.trainers.common import (NonFiniteError, PackedBatch, autocast, build_optimizer, build_scheduler,
                                  check_finite, completion_logprobs, micro_batches, module_device, pack)
from rlvr.trainers.config_fields import CheckpointFields, MasterWeightsFields, OptimFields, SamplingFields
from rlvr.trainers.logger import rank_logger
from rlvr.trainers.process_rewards import ProcessRewardConfig
from rlvr.trainers.ref_sync import mix_into, sync_due


class GRPOConfig(SamplingFields, OptimFields, MasterWeightsFields, CheckpointFields):
    checkpoint_every: int = 10
    """steps between checkpoints (0: only at the end)"""
    enabled: bool = False
    """run this stage at all (a recipe turns it on with `enabled: true`)"""
    steps: int = 40
    """optimizer steps (one batch of groups each, times mu inner iterations)"""
    prompts_per_step: int = 32
    """groups per batch"""
    group_size: int = 8
    """completions sampled per prompt (G)"""
    min_new_tokens: int = 0
    """EOS is suppressed before this many tokens (benchmarks use it to fix the work per step)"""
    advantage: str = "grpo"
    """advantage estimator name (rlvr.algos registry)"""
    advantage_options: dict[str, Any] = {}
    """extra keyword options for the estimator, e.g. {scale_by_std: false}"""
    policy_loss: str = "ppo_clip"
    """policy loss name (rlvr.algos registry): ppo_clip | gspo (sequence ratio; set clip_low/high ~3e-4/4e-4) |
    cispo (clipped IS weight, every token keeps a gradient; set clip_low 1, clip_high ~4)"""
    clip_low: float = 0.2
    """ε_low: ratio floor 1-ε_low"""
    clip_high: float = 0.28
    """ε_high: ratio ceiling 1+ε_high (clip-higher when > clip_low)"""
    dual_clip: float | None = None
    """dual-clip constant c > 1 for negative advantages (None: off)"""
    loss_agg: str = "token_mean"
    """token_mean | seq_mean_token_sum | seq_mean_token_mean | dr_grpo"""
    beta: float = 0.0
    """KL coefficient to the frozen reference (0: no reference model is loaded)"""
    ref_sync_every: int = Field(0, ge=0)
    """steps between refreshes of the reference, θ_ref ← α·θ + (1-α)·θ_ref (rlvr.trainers.ref_sync; 0: it stays
    the initial policy); needs beta > 0 and full weights (not LoRA)"""
    ref_sync_alpha: float = Field(1.0, gt=0.0, le=1.0)
    """α of each refresh: 1 = hard reset to the policy (ProRL), < 1 = soft update (TR-DPO; TRL's default 0.6)"""
    kl_estimator: str = "k3"
    """k1 | k2 | k3"""
    kl_mode: Literal["loss", "reward"] = "loss"
    """KL as a loss term, or subtracted from the sequence reward"""
    entropy_coef: float = 0.0
    """entropy bonus: coef·H(π(·|c_<t)) per token is subtracted from the loss (keeps exploration alive)"""
    top_entropy_quantile: float = Field(1.0, gt=0.0, le=1.0)
    """fraction ρ of each micro-batch's completion tokens, highest entropy first, that carry the policy-gradient
    loss (rlvr.algos.high_entropy_mask; the 80/20 paper used 0.2); the KL and entropy terms still cover every
    token, and the loss normaliser still counts every token. 1.0: all tokens"""
    mu: int = 1
    """passes over each batch (PPO epochs; old log-probs are the behaviour policy's, from before any update)"""
    minibatches: int = Field(1, ge=1)
    """optimizer steps per pass: the batch is split in order into this many parts (verl's ppo_mini_batch_size,
    TRL's steps_per_generation); > 1 adds a no-grad forward for the old log-probs"""
    micro_batch: int = 64
    """sequences per forward/backward (gradient accumulation inside one optimizer step)"""
    share_prompt_forward: ShareSetting = "auto"
    """each distinct prompt of a micro-batch runs once and its rows share its KV cache
    (rlvr.models.shared_prompt): the same log-probs up to float order, the prompt tokens computed once per group
    instead of G times. Off: every row runs [prompt | completion] (also when gradient checkpointing is on).
    "auto": on when the policy is on the CPU; off on a GPU, where it measured slower at small sizes
    (share_prompts_on)"""
    dynamic_sampling: bool = True
    """drop zero-spread groups and refill the batch"""
    max_sampling_rounds: int = 3
    """bound on generation rounds per step when refilling"""
    oversample: float = Field(1.0, ge=1.0)
    """dynamic sampling draws ceil(oversample x missing groups) prompts per round and trims kept groups beyond
    prompts_per_step (DAPO's over-sampling): with a kept fraction near 1/oversample one decode round fills the
    batch instead of three, and a small model's decode costs about the same for 2x the rows"""
    overlong: Literal["none", "mask", "penalty"] = "none"
    """truncated completions: keep / mask out of the loss / soft penalty"""
    overlong_buffer: int = 4
    """soft-penalty band: the penalty ramps from 0 to -1 over the last this-many tokens"""
    tis_cap: float | None = None
    """truncated importance-sampling cap for sampler/trainer log-prob mismatch (None: off)"""
    verify_timeout: float = 5.0
    """per-call verifier deadline (seconds)"""
    eval_every: int = 10
    """steps between held-out greedy evals (0: never)"""
    env: MultiTurnConfig | None = None
    """multi-turn rollouts with an environment, e.g. {name: arithmetic_retry, max_turns: 3, credit: outcome}
    (docs/multiturn.md); None: single-turn"""
    process_reward: ProcessRewardConfig | None = None
    """dense per-step rewards from a PRM verifier of the task (rlvr.trainers.process_rewards); None: outcome only"""

    @model_validator(mode="after")
    def _one_credit_scheme(self) -> "GRPOConfig":
        if self.env is not None and self.process_reward is not None:
            raise ValueError("process_reward and env (multi-turn credit) cannot be combined")
        if self.ref_sync_every and self.beta <= 0:
            raise ValueError("ref_sync_every refreshes the KL reference: it needs beta > 0")
        return self


def soft_overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO soft overlong punishment: 0 for L <= L_max - buffer, then ((L_max - buffer) - L) / buffer down to -1."""
    start = max_len - buffer
    if length <= start or buffer <= 0:
        return 0.0
    return max(-1.0, (start - length) / buffer)


class PromptStream:
    """Seeded, epoch-shuffled prompt order; the cursor is all the state a resume needs.

    With several ranks, rank r reads positions r, r + world, r + 2·world, ... of the one global order (its cursor
    counts its own takes), so ranks draw disjoint prompts and whole groups stay on the rank that sampled them.
    """

    def __init__(self, n: int, seed: int, cursor: int = 0, rank: int = 0, world: int = 1):
        self.n, self.seed, self.cursor, self.rank, self.world = n, seed, cursor, rank, world

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, offset = divmod(self.cursor * self.world + self.rank, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            out.append(int(perm[offset]))
            self.cursor += 1
        return out


@dataclass
class Batch:
    """One step's training data, flattened group-major: rows [g*G:(g+1)*G] belong to group g."""

    packed: PackedBatch
    rewards: torch.Tensor         # [B] scalar reward per completion (weighted verifiers, shaped)
    group_ids: torch.Tensor       # [B]
    sampler_logp: torch.Tensor    # [B, C] log-probs reported by the rollout engine
    metrics: dict[str, float]
    # Multi-turn: `fn(rewards [B], group_ids [B], **options) -> (advantages [B, C], metrics)` used in place of the
    # outcome estimator (per-token credit, rlvr.trainers.grpo_multiturn). None: cfg.advantage.
    advantages: Callable | None = None
    # Dense process rewards: (step values [B, C], step-end mask [B, C]) when cfg.process_reward is set.
    process: tuple[torch.Tensor, torch.Tensor] | None = None


def collect_batch(engine, task, examples, stream: PromptStream, cfg: GRPOConfig, tokenizer,
                  seed: int = 0) -> Batch:
    """Sample G completions per prompt, verify, and (dynamic sampling) keep only groups with reward spread.

    Each round samples with its own seed (derived from `seed`), so a resumed run draws the same samples.
    """
    from rlvr.rollout import SamplingParams

    if cfg.env is not None:   # multi-turn dialogues with an environment
        from rlvr.trainers.grpo_multiturn import collect_multiturn_batch
        return collect_multiturn_batch(engine, task, examples, stream, cfg, tokenizer, seed=seed)
    kept: list[tuple[list, list]] = []   # (rollouts, scores) per kept group
    all_scores, n_groups, dropped, t_gen, t_ver = [], 0, 0, 0.0, 0.0
    for rnd in range(cfg.max_sampling_rounds if cfg.dynamic_sampling else 1):
        params = SamplingParams(n=cfg.group_size, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                                seed=seed * 1000 + rnd)
        missing = cfg.prompts_per_step - len(kept)
        idx = stream.take(math.ceil(missing * cfg.oversample) if cfg.dynamic_sampling else missing)
        exs = [examples[i] for i in idx]
        t0 = time.time()
        groups = engine.generate([task.render(e, tokenizer) for e in exs], params)
        t1 = time.time()
        flat = [r for g in groups for r in g]
        scores = task.score([r.text for r in flat], [e for e in exs for _ in range(cfg.group_size)],
                            truncated=[r.finish_reason == "length" for r in flat],
                            num_tokens=[len(r.completion_ids) for r in flat], timeout=cfg.verify_timeout)
        t_ver += time.time() - t1
        t_gen += t1 - t0
        all_scores += scores
        for g, rollouts in enumerate(groups):
            sc = scores[g * cfg.group_size:(g + 1) * cfg.group_size]
            n_groups += 1
            if cfg.dynamic_sampling and len({round(s.reward, 9) for s in sc}) == 1:
                dropped += 1
                continue
            kept.append((rollouts, sc))
        if len(kept) >= cfg.prompts_per_step:
            break
    surplus = max(0, len(kept) - cfg.prompts_per_step)
    kept = kept[:cfg.prompts_per_step]
    rollouts = [r for rs, _ in kept for r in rs]
    scores = [s for _, sc in kept for s in sc]
    metrics = _rollout_metrics(all_scores, task, cfg)
    metrics.update({"sampling/groups": n_groups, "sampling/dropped_groups": dropped,
                    "sampling/kept_groups": len(kept), "sampling/surplus_groups": surplus,
                    "time/generate_s": t_gen, "time/verify_s": t_ver})
    if not kept:
        return Batch(None, torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 0), metrics)
    packed = pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], tokenizer.pad_token_id)
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    if cfg.overlong == "penalty":
        rewards += torch.tensor([soft_overlong_penalty(len(r.completion_ids), cfg.max_new_tokens,
                                                       cfg.overlong_buffer) for r in rollouts])
    if cfg.overlong == "mask":
        trunc = torch.tensor([r.finish_reason == "length" for r in rollouts])
        packed.completion_mask &= ~trunc[:, None]
    group_ids = torch.arange(len(kept)).repeat_interleave(cfg.group_size)
    C = packed.completion_ids.shape[1]
    sampler_logp = torch.zeros(len(rollouts), C)
    for i, r in enumerate(rollouts):
        if r.logprobs is not None:
            sampler_logp[i, :len(r.logprobs)] = torch.tensor(r.logprobs[:C])
    batch = Batch(packed, rewards, group_ids, sampler_logp, metrics)
    if cfg.process_reward is not None:   # dense PRM step rewards (GRPO: process advantages; PPO: token rewards)
        from rlvr.trainers.process_rewards import grpo_process_advantages, step_rewards
        batch.process = step_rewards(task, tokenizer, rollouts, scores, cfg.process_reward, C)
        batch.advantages = grpo_process_advantages(*batch.process, cfg.process_reward,
                                                   get_advantage(cfg.advantage), cfg.advantage_options)
    return batch


def _rollout_metrics(scores, task, cfg: GRPOConfig) -> dict[str, float]:
    """Reward per verifier and outcome-state fractions over every sampled completion (kept or not)."""
    from verifiers.base import STATUSES

    m: dict[str, float] = {}
    rewards = [s.reward for s in scores]
    m["reward/mean"] = statistics.fmean(rewards)
    m["reward/std"] = statistics.pstdev(rewards)
    for w in task.verifiers:
        # A prompt mixture (rlvr.workflow) routes sources to different verifiers: average over who has it.
        vals = [s.verdicts[w.name].reward for s in scores if w.name in s.verdicts]
        if not vals:
            continue
        m[f"reward/{w.name}"] = statistics.fmean(vals)
        m[f"reward/{w.name}_std"] = statistics.pstdev(vals)
    for st in STATUSES:
        m[f"outcome/{st}"] = sum(s.status == st for s in scores) / len(scores)
    return m


def rollout_mismatch(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """How far the sampler's log-probs are from the trainer's on the sampled tokens (all [B, T]).

    d = log p_sampler - log p_trainer;  k1 = E[d],  k3 = E[exp(-d) - 1 + d]  (estimates of KL(sampler || trainer)
    with samples from the sampler), plus the mean |d|. Non-zero with vLLM or bf16 sampling; ~0 with the HF engine.
    """
    m = mask.float()
    n = m.sum().clamp(min=1)
    d = (sampler_logp - trainer_logp) * m
    return {"rollout/kl_k1": d.sum() / n, "rollout/kl_k3": ((torch.exp(-d) - 1 + d) * m).sum() / n,
            "rollout/logp_abs_diff": d.abs().sum() / n}


def _behaviour_pass(cfg: GRPOConfig, has_ref: bool) -> bool:
    """Whether the update starts with a no-grad forward of the current (behaviour) policy: its log-probs are the
    old log-probs when the batch is split into several optimizer steps, and the KL-in-reward needs them."""
    return cfg.minibatches > 1 or (has_ref and cfg.kl_mode == "reward")


def policy_update(model, ref_model, opt, batch: Batch, cfg: GRPOConfig) -> dict[str, float]:
    """mu passes over the batch; each pass is `minibatches` optimizer steps, each with micro-batch accumulation.

    Old log-probs (the behaviour policy's) come from the first pass's own forward when the first optimizer step
    sees the whole batch (minibatches = 1), else from a no-grad forward before any update."""
    adv_fn = get_advantage(cfg.advantage)
    loss_fn = get_policy_loss(cfg.policy_loss)
    kl_fn = get_kl(cfg.kl_estimator)
    tr, ctx = as_trainable(opt, model, cfg.grad_clip), context()
    # Rewards and advantages stay on the CPU (small, built from Python lists); token tensors go to the model.
    dev = module_device(model)
    pb, B = batch.packed.to(dev), len(batch.packed)
    sampler_logp = batch.sampler_logp.to(dev)

    def score(m) -> torch.Tensor:   # gathered(): ZeRO-3 scores this rank's rows without collectives
        with torch.no_grad(), autocast(cfg.bf16), tr.gathered():
            return torch.cat([completion_logprobs(m, pb.select(s), temperature=cfg.temperature,
                                                  share_prompts=cfg.share_prompt_forward)[0]
                              for s in micro_batches(B, cfg.micro_batch)])

    t_ref = time.perf_counter()
    ref_logp = score(ref_model) if ref_model is not None else None
    sums: dict[str, float] = {"time/ref_s": time.perf_counter() - t_ref, "time/optimizer_s": 0.0}
    old_from_pass = not _behaviour_pass(cfg, ref_model is not None)
    old_logp = torch.zeros(pb.completion_ids.shape, device=dev) if old_from_pass else score(tr.compute)
    if not old_from_pass:
        sums.update({k: float(v) for k, v in rollout_mismatch(old_logp, sampler_logp, pb.completion_mask).items()})
    rewards = batch.rewards.clone()
    if ref_logp is not None and cfg.kl_mode == "reward":
        rewards -= cfg.beta * (kl_fn(old_logp, ref_logp) * pb.completion_mask).sum(-1).cpu()
    adv, adv_metrics = (batch.advantages or adv_fn)(rewards, batch.group_ids, **cfg.advantage_options)
    adv = adv.to(dev)
    # Per optimizer step (one part of the batch): loss normalisers count every rank's rows of that part, so each
    # rank's loss is its share of the part's global loss; micro-batch counts agree across ranks (ZeRO reduces
    # per backward). A part empty on every rank is no step at all.
    parts = []
    for part in even_slices(B, cfg.minibatches):   # this rank's rows, in order
        n = part.stop - part.start
        n_tok = ctx.all_sum(int(pb.completion_mask[part].sum()))
        n_seq = ctx.all_sum(n)
        if n_seq:
            slices = [slice(part.start + s.start, part.start + s.stop) for s in ctx.micro_batches(n, cfg.micro_batch)]
            parts.append((slices, n_tok, n_seq))
    steps = cfg.mu * max(1, len(parts))
    for it in range(cfg.mu):
        for slices, n_tok, n_seq in parts:
            for s in slices:
                if s.start == s.stop:
                    tr.backward_nothing()
                    continue
                mb = pb.select(s)
                mask = mb.completion_mask
                with autocast(cfg.bf16):
                    logp, ent = completion_logprobs(tr.compute, mb, temperature=cfg.temperature, with_entropy=True,
                                                    share_prompts=cfg.share_prompt_forward)
                lm: dict[str, Any] = {}
                frac = (s.stop - s.start) / B
                if it == 0 and old_from_pass:  # the weights that sampled this batch: no update yet
                    old_logp[s] = logp.detach()
                    for k, v in rollout_mismatch(old_logp[s], sampler_logp[s], mask).items():
                        sums[k] = sums.get(k, 0.0) + float(v) * frac
                loss_mat, pm = loss_fn(logp, old_logp[s], adv[s], mask, clip_low=cfg.clip_low,
                                       clip_high=cfg.clip_high, dual_clip_c=cfg.dual_clip)
                lm.update(pm)
                if cfg.tis_cap is not None:
                    w, tm = tis_weights(old_logp[s], sampler_logp[s], cfg.tis_cap, mask)
                    loss_mat = loss_mat * w
                    lm.update(tm)
                if cfg.top_entropy_quantile < 1.0:
                    keep = high_entropy_mask(ent, mask, cfg.top_entropy_quantile)
                    loss_mat = loss_mat * keep
                    lm["loss/entropy_kept_frac"] = keep.sum() / mask.sum().clamp(min=1)
                if ref_logp is not None and cfg.kl_mode == "loss":
                    kl = kl_fn(logp, ref_logp[s])
                    loss_mat = loss_mat + cfg.beta * kl
                    lm["loss/kl"] = ((kl * mask).sum() / mask.sum().clamp(min=1)).detach()
                if cfg.entropy_coef:
                    loss_mat = loss_mat - cfg.entropy_coef * ent
                loss = aggregate_loss(loss_mat, mask, cfg.loss_agg, cfg.max_new_tokens,
                                      num_tokens_total=n_tok, num_seqs_total=n_seq)
                check_finite(loss, "policy loss")
                tr.backward(loss)
                # loss/total: the mean over optimizer steps of each step's loss (this rank's share); the rest are
                # row-weighted means over all passes
                sums["loss/total"] = sums.get("loss/total", 0.0) + float(loss.detach()) / steps
                lm["policy/entropy"] = (ent * mask).sum() / mask.sum().clamp(min=1)
                for k, v in lm.items():
                    sums[k] = sums.get(k, 0.0) + float(torch.as_tensor(v).detach()) * frac / cfg.mu
            t_opt = time.perf_counter()
            sums["grad/norm"] = sums.get("grad/norm", 0.0) + tr.step() / steps
            sums["time/optimizer_s"] += time.perf_counter() - t_opt
    lengths = pb.completion_mask.sum(-1).float()
    sums.update({f"adv/{k.split('/')[-1]}": float(v) for k, v in adv_metrics.items()})
    sums.update({"adv/mean": float(adv.mean()), "adv/std": float(adv.std()) if B > 1 else 0.0,
                 "response/length_mean": float(lengths.mean()), "response/length_max": float(lengths.max()),
                 "perf/train_tokens": sum(n_tok for _, n_tok, _ in parts)})
    return sums


# Summed across ranks (shares of a global total); every other metric is averaged (rlvr.distributed.context).
SUM_METRICS = ("loss/total", "sampling/groups", "sampling/dropped_groups", "sampling/kept_groups")


def idle_update(tr, cfg: GRPOConfig, has_ref: bool) -> None:
    """A rank whose dynamic sampling kept no group while other ranks did: it takes part in policy_update's
    collectives in the same order (ZeRO-3's weight gathers for the no-grad scoring passes, the two global counts,
    the micro-batch count, one zero-loss backward per slot, the steps)."""
    ctx = context()
    for _ in range(int(has_ref) + int(_behaviour_pass(cfg, has_ref))):
        with tr.gathered():
            pass
    parts = []
    for _ in range(cfg.minibatches):
        ctx.all_sum(0)
        if ctx.all_sum(0):
            parts.append(list(ctx.micro_batches(0, cfg.micro_batch)))
    for _ in range(cfg.mu):
        for slices in parts:
            for _ in slices:
                tr.backward_nothing()
            tr.step()


def train_grpo(model, tokenizer, engine, task, examples, cfg: GRPOConfig, *, out_dir, seed: int = 0,
               evaluate: Callable[[torch.nn.Module], float] | None = None, resume: bool = False,
               name: str = "grpo", log_fn: Callable[[str], None] = print,
               dist: DistributedConfig | None = None) -> dict[str, Any]:
    """The GRPO loop: collect → advantages → update, with eval, checkpoints and metrics each step.

    Several ranks (`dist.deepspeed`): each rank samples prompts_per_step / world whole groups with its own engine,
    computes their advantages locally (a group never straddles ranks) and trains on them; losses are normalised
    by the global token / sequence counts, so the summed gradient is that of the whole batch.
    """
    from verifiers.pool import health

    ctx = context()
    if cfg.prompts_per_step % ctx.world_size:
        raise ConfigError(f"{name}.prompts_per_step={cfg.prompts_per_step} must be a multiple of the number of "
                          f"processes ({ctx.world_size}): each rank samples whole groups")
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=cfg.fused_adamw)
    sched = build_scheduler(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, kind=cfg.schedule)
    ref_model = reference_model(model, param_dtype=torch.bfloat16 if cfg.bf16_params else None) \
        if cfg.beta > 0 else None   # before ZeRO-3 partitions; LoRA: adapters off
    if cfg.ref_sync_every and not isinstance(ref_model, torch.nn.Module):
        raise ConfigError(f"{name}.ref_sync_every: the reference of a LoRA policy is its base model with the "
                          "adapters off and cannot be refreshed; use full weights or ref_sync_every: 0")
    tr = prepare(model, opt, dist, grad_clip=cfg.grad_clip, bf16=cfg.bf16, bf16_params=cfg.bf16_params)
    ckpts = tr.checkpoints(out_dir, keep_last=cfg.keep_last)
    step, cursor, evals = 0, 0, []
    last = ckpts.latest() if resume else None
    if last is not None:
        ckpts.restore(last, model, opt, sched)
        if cfg.ref_sync_every and (ref_state := ckpts.load_extra(last, "reference")) is not None:
            ref_model.load_state_dict(ref_state)
        step, evals = last.state["step"], last.state.get("evals", [])
        cursor = last.state["cursors"][ctx.rank] if "cursors" in last.state else last.state["cursor"]
        log_fn(f"{name}: resumed from {last.path} (step {step})")
    with tr.gathered():   # ZeRO-3: generation, evals and weight sync see full weights and run no collectives
        sync_weights(engine, model)
    stream = PromptStream(len(examples), seed, cursor, rank=ctx.rank, world=ctx.world_size)
    local_cfg = cfg.model_copy(update={"prompts_per_step": cfg.prompts_per_step // ctx.world_size})
    logger = rank_logger(out_dir, name=name, total_steps=cfg.steps, resume_step=step if last else None,
                           show_keys=["reward/mean", "eval/pass@1", "sampling/dropped_groups"])
    t_start = time.time()
    try:
        while step < cfg.steps:
            t0 = time.time()
            model.eval()
            with tr.gathered():
                batch = collect_batch(engine, task, examples, stream, local_cfg, tokenizer,
                                      seed=(seed * 100_000 + step) * ctx.world_size + ctx.rank)
            metrics = dict(batch.metrics)
            t1 = time.time()
            if ctx.all_max(len(batch.packed) if batch.packed is not None else 0) > 0:   # some rank has groups
                model.train()
                if batch.packed is not None:
                    metrics.update(policy_update(model, ref_model, tr, batch, cfg))
                else:
                    idle_update(tr, cfg, has_ref=ref_model is not None)
                t_sync = time.time()
                with tr.gathered():
                    sync_weights(engine, model)
                metrics["time/sync_s"] = time.time() - t_sync
                sched.step()
            step += 1
            if ref_model is not None and sync_due(step, cfg.ref_sync_every):
                with tr.gathered():   # ZeRO-3: full policy weights to mix from
                    mix_into(ref_model, model, cfg.ref_sync_alpha)
                metrics["ref/synced"] = 1.0
            metrics["time/train_s"] = time.time() - t1
            metrics["time/step_s"] = time.time() - t0
            metrics["perf/tokens_per_s"] = metrics.get("perf/train_tokens", 0) / max(1e-9, metrics["time/step_s"])
            metrics["lr"] = sched.get_last_lr()[0]
            metrics.update({f"verify/{k}": v for k, v in health().items()})
            metrics = ctx.reduce_metrics(metrics, sum_keys=SUM_METRICS)
            if evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                with tr.gathered():
                    score = ctx.broadcast_object(float(evaluate(model)))
                evals.append((step, score))
                metrics["eval/pass@1"] = score
            logger.log(step, metrics)
            if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                ckpts.save(step, model, opt, sched, state={"cursor": stream.cursor, "evals": evals,
                                                           "cursors": ctx.all_gather_object(stream.cursor)},
                           extra={"reference": ref_model.state_dict()} if cfg.ref_sync_every else None)
    except NonFiniteError as e:
        good = ckpts.latest()
        where = f"last good checkpoint: {good.path}" if good else "no checkpoint was written yet"
        raise NonFiniteError(f"{name} step {step + 1}: {e}; stopping ({where})") from None
    finally:
        logger.close()
    summary = {"steps": step, "evals": evals, "final_pass@1": evals[-1][1] if evals else None,
               "wall_s": time.time() - t_start}
    if ctx.is_main:
        atomic_write_json(Path(out_dir) / f"{name}_summary.json", summary)
    return summary
