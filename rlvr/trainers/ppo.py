"""PPO with a learned critic — the classic RLHF stage (Ouyang et al. 2022, arXiv:2203.02155) on verifiable rewards.

One step, top to bottom (`train_ppo`):
  1. sample completions and verify them: GRPO's `collect_batch` (same engines, verifiers and rollout metrics);
  2. with no grad: behaviour log-probs, reference log-probs, values V(s_t) (rlvr.models.critic);
  3. token rewards  r_t = -β·kl_t  (+ the sequence reward on the final token)   `kl_penalty_rewards`;
  4. GAE(γ, λ) advantages and returns (`gae_advantages`), advantages whitened over the batch's tokens;
  5. ppo_epochs × minibatches: clipped policy loss + vf_coef·clipped value loss − entropy_coef·entropy;
  6. the KL controller (fixed, or adaptive toward kl_target) sees the batch's mean sequence KL.

How this departs from InstructGPT / TRL's PPOTrainer (each a knob or a documented choice):
- rewards come from the task's verifiers; a reward model plugs in as a verifier (task.extra_verifiers), and
  rewards are not normalised (verifier rewards already live in [0, 1]);
- the policy loss, its clip range (clip-higher allowed) and the loss aggregation are looked up by name, as in
  GRPO; the default aggregation is token_mean;
- the critic is a separate trunk (default) or shares the policy's trunk (`critic: shared`); one AdamW steps
  both, with its own learning rate for critic-only parameters;
- the behaviour log-probs are recomputed by the trainer (not taken from the sampler), so the first epoch's
  ratio is exactly 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import model_validator

from rlvr.algos import (AdaptiveKLController, FixedKLController, aggregate_loss, gae_advantages,
                        get_policy_loss, kl_penalty_rewards, masked_mean, whiten)
from rlvr.distributed import DistributedConfig, context, prepare, reference_model, sync_weights
from rlvr.distributed.bf16_params import check_bf16_params
from rlvr.distributed.trainable import as_trainable
from rlvr.errors import ConfigError
from rlvr.models.critic import ActorCritic, build_critic, completion_values
from rlvr.models.shared_prompt import ShareSetting
from rlvr.trainers.checkpoint import atomic_write_json
from rlvr.trainers.common import (NonFiniteError, PackedBatch, adamw, autocast, build_scheduler, check_finite,
                                  completion_logprobs, micro_batches, module_device)
from rlvr.trainers.config_fields import CheckpointFields, MasterWeightsFields, OptimFields, SamplingFields
from rlvr.trainers.grpo import GRPOConfig, PromptStream, collect_batch
from rlvr.trainers.logger import rank_logger
from rlvr.trainers.process_rewards import ProcessRewardConfig

__all__ = ["PPOConfig", "clipped_value_loss", "explained_variance", "RolloutData", "prepare_rollout",
           "ppo_update", "make_kl_controller", "train_ppo"]


class PPOConfig(SamplingFields, OptimFields, MasterWeightsFields, CheckpointFields):
    checkpoint_every: int = 10
    """steps between checkpoints (0: only at the end)"""
    enabled: bool = False
    """run this stage at all"""
    steps: int = 40
    """PPO iterations (sample a batch, then ppo_epochs passes over it)"""
    prompts_per_step: int = 32
    """prompts sampled per step"""
    samples_per_prompt: int = 1
    """completions per prompt"""
    min_new_tokens: int = 0
    """EOS is suppressed before this many tokens"""
    overlong: Literal["none", "mask", "penalty"] = "none"
    """truncated completions: keep / mask out of the loss / soft penalty (as GRPO)"""
    overlong_buffer: int = 4
    """soft-penalty band in tokens"""
    verify_timeout: float = 5.0
    """per-call verifier deadline (seconds)"""
    process_reward: ProcessRewardConfig | None = None
    """dense per-step PRM rewards added to the token rewards (rlvr.trainers.process_rewards); None: outcome only"""
    critic_lr: float = 1e-5
    """learning rate of critic-only parameters (the whole critic when separate, its head when shared)"""
    ppo_epochs: int = 4
    """passes over each sampled batch"""
    minibatches: int = 1
    """optimizer steps per pass (the batch is shuffled and split)"""
    micro_batch: int = 64
    """sequences per forward/backward (gradient accumulation inside one minibatch)"""
    share_prompt_forward: ShareSetting = "auto"
    """rows that repeat a prompt (samples_per_prompt > 1) run it once per micro-batch and share its KV cache in the
    policy and reference log-prob passes (rlvr.models.shared_prompt; the critic runs every row); "auto": on the
    CPU only (share_prompts_on)"""
    policy_loss: str = "ppo_clip"
    """policy loss name (rlvr.algos registry)"""
    clip_low: float = 0.2
    """ε_low: ratio floor 1-ε_low"""
    clip_high: float = 0.2
    """ε_high: ratio ceiling 1+ε_high"""
    dual_clip: float | None = None
    """dual-clip constant c > 1 (None: off)"""
    loss_agg: str = "token_mean"
    """token_mean | seq_mean_token_sum | seq_mean_token_mean | dr_grpo"""
    gamma: float = 1.0
    """GAE discount γ"""
    lam: float = 0.95
    """GAE λ"""
    whiten_advantages: bool = True
    """normalise advantages to mean 0, std 1 over the batch's response tokens"""
    vf_coef: float = 0.1
    """weight of the value loss"""
    value_clip: float | None = 0.2
    """value-loss clip range ε_v around the rollout's values (None: unclipped)"""
    entropy_coef: float = 0.0
    """entropy bonus weight (subtracted from the loss)"""
    kl_coef: float = 0.05
    """β of the per-token KL penalty (initial value when adaptive); 0 with kl_target null: no reference"""
    kl_target: float | None = None
    """adaptive KL: target mean sequence KL (None: β stays fixed)"""
    kl_horizon: float = 10000.0
    """adaptive KL horizon, in sequences"""
    kl_estimator: str = "k1"
    """per-token KL estimator for the penalty: k1 | k2 | k3"""
    critic: Literal["separate", "shared"] = "separate"
    """critic trunk: its own copy of the policy's trunk, or the policy's trunk itself"""
    critic_init: str | None = None
    """saved value-head model (e.g. a reward model) to start a separate critic from (None: the policy's trunk)"""
    eval_every: int = 10
    """steps between held-out greedy evals (0: never)"""

    @model_validator(mode="after")
    def _check(self) -> "PPOConfig":
        if self.ppo_epochs < 1 or self.minibatches < 1 or self.micro_batch < 1:
            raise ValueError("ppo_epochs, minibatches and micro_batch must be >= 1")
        if self.minibatches > self.prompts_per_step * self.samples_per_prompt:
            raise ValueError(f"minibatches={self.minibatches} exceeds the batch of "
                             f"{self.prompts_per_step * self.samples_per_prompt} sequences")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must lie in [0, 1]; got {self.gamma}, {self.lam}")
        if self.kl_coef < 0 or (self.kl_target is not None and self.kl_target <= 0):
            raise ValueError("kl_coef must be >= 0 and kl_target > 0 (or null)")
        if self.critic == "shared" and self.critic_init is not None:
            raise ValueError("critic_init needs critic: separate (a shared critic starts from the policy)")
        return self

    @property
    def uses_reference(self) -> bool:
        return self.kl_coef > 0 or self.kl_target is not None

    def sampling(self) -> GRPOConfig:
        """The rollout fields in the form `collect_batch` reads (no dynamic sampling: PPO keeps every sample)."""
        keep = ("prompts_per_step", "temperature", "top_p", "max_new_tokens", "min_new_tokens", "overlong",
                "overlong_buffer", "verify_timeout", "process_reward")
        return GRPOConfig(**{k: getattr(self, k) for k in keep}, group_size=self.samples_per_prompt,
                          dynamic_sampling=False, max_sampling_rounds=1)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO value loss with clipping (Schulman et al. 2017; as in OpenAI baselines / TRL).

    values (with grad), old_values (rollout-time), returns, mask [B, T] -> loss_mat [B, T] (0 off the mask):
        V_clip = V_old + clip(V - V_old, -ε, ε)
        L      = ½ · max((V - R)², (V_clip - R)²)          (ε = None: L = ½ (V - R)²)
    Metrics: loss/vf_clipfrac (tokens where the clipped term is the larger one).
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        loss, clipped_frac = 0.5 * unclipped, values.new_zeros(())
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        clipped = (v_clip - returns) ** 2
        loss = 0.5 * torch.maximum(unclipped, clipped)
        clipped_frac = masked_mean((clipped > unclipped).float(), mask).detach()
    loss = torch.where(mask.bool(), loss, torch.zeros_like(loss))
    return loss, {"loss/vf_clipfrac": clipped_frac}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over masked tokens: 1 = perfect critic, 0 = no better than a constant."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return float(1 - var_d / var_r) if var_r > 0 else float("nan")


def make_kl_controller(cfg: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if cfg.kl_target is None:
        return FixedKLController(cfg.kl_coef)
    return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)


@dataclass
class RolloutData:
    """Everything the update needs about one sampled batch; all [B, C] except `packed`."""

    packed: PackedBatch
    old_logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    metrics: dict[str, float]


@torch.no_grad()
def prepare_rollout(ac: ActorCritic, ref_model, packed: PackedBatch, scores: torch.Tensor, cfg: PPOConfig,
                    kl_coef: float, dense: torch.Tensor | None = None) -> RolloutData:
    """Steps 2-4: behaviour log-probs, reference log-probs, values, KL-shaped token rewards, GAE.
    `dense` [B, C]: per-token process rewards (PRM step scores on step-end tokens), added × process_reward.weight."""
    dev = module_device(ac.policy)   # token tensors and everything derived from them live on the model's device
    packed, scores = packed.to(dev), scores.to(dev)
    dense = dense.to(dev) if dense is not None else None
    mask = packed.completion_mask
    old, ref, vals = [], [], []
    for s in micro_batches(len(packed), cfg.micro_batch):
        mb = packed.select(s)
        with autocast(cfg.bf16):
            old.append(completion_logprobs(ac.policy, mb, temperature=cfg.temperature,
                                           share_prompts=cfg.share_prompt_forward)[0])
            vals.append(completion_values(ac.critic, mb))
            if ref_model is not None:
                ref.append(completion_logprobs(ref_model, mb, temperature=cfg.temperature,
                                               share_prompts=cfg.share_prompt_forward)[0])
    old_logp, values = torch.cat(old), torch.cat(vals)
    ref_logp = torch.cat(ref) if ref else old_logp          # no reference: KL term is exactly 0
    rewards, m = kl_penalty_rewards(scores, old_logp, ref_logp, mask, kl_coef, cfg.kl_estimator)
    if dense is not None and cfg.process_reward is not None:
        rewards = rewards + cfg.process_reward.weight * dense * mask
        m["reward/process_sum_mean"] = (dense * mask).sum(-1).mean()
    adv, returns = gae_advantages(rewards, values, mask, cfg.gamma, cfg.lam)
    metrics = {k: float(v) for k, v in m.items()}
    metrics.update({"adv/mean": float(masked_mean(adv, mask)), "returns/mean": float(masked_mean(returns, mask)),
                    "value/mean": float(masked_mean(values, mask)),
                    "value/explained_variance": explained_variance(values, returns, mask)})
    ctx = context()   # several ranks: whiten with the statistics of every rank's tokens (as one process would)
    if cfg.whiten_advantages and ctx.all_sum(int(mask.sum())) >= 2:
        adv = whiten(adv, mask, all_sum=ctx.all_sum)
    return RolloutData(packed, old_logp, values, adv, returns, metrics)


def ppo_update(ac: ActorCritic, opt, data: RolloutData, cfg: PPOConfig, gen: torch.Generator) -> dict[str, float]:
    """Step 5: ppo_epochs passes, each shuffled into `minibatches` optimizer steps with micro-batch accumulation.
    Several ranks: every rank holds the same number of rows (no dynamic sampling), so minibatch and micro-batch
    counts agree; loss normalisers count all ranks' tokens / sequences."""
    tr, ctx = as_trainable(opt, ac, cfg.grad_clip), context()
    ac = tr.compute              # the training passes' module (a bf16 twin with bf16_params)
    loss_fn = get_policy_loss(cfg.policy_loss)
    pb, B = data.packed, len(data.packed)
    n_updates = cfg.ppo_epochs * cfg.minibatches
    sums: dict[str, float] = {}

    def add(key: str, value: Any, weight: float) -> None:
        sums[key] = sums.get(key, 0.0) + float(torch.as_tensor(value).detach()) * weight

    for _ in range(cfg.ppo_epochs):
        for mb in torch.randperm(B, generator=gen).chunk(cfg.minibatches):
            n_tok, n_seq = ctx.all_sum(int(pb.completion_mask[mb].sum())), ctx.all_sum(len(mb))
            for s in micro_batches(len(mb), cfg.micro_batch):
                idx = mb[s]
                sub = pb.select(idx)
                mask = sub.completion_mask
                with autocast(cfg.bf16):
                    logp, ent = completion_logprobs(ac.policy, sub, temperature=cfg.temperature, with_entropy=True,
                                                    share_prompts=cfg.share_prompt_forward)
                    values = completion_values(ac.critic, sub)
                pl, lm = loss_fn(logp, data.old_logp[idx], data.advantages[idx], mask, clip_low=cfg.clip_low,
                                 clip_high=cfg.clip_high, dual_clip_c=cfg.dual_clip)
                vl, vm = clipped_value_loss(values, data.values[idx], data.returns[idx], mask, cfg.value_clip)
                agg = lambda mat: aggregate_loss(mat, mask, cfg.loss_agg, cfg.max_new_tokens,
                                                 num_tokens_total=n_tok, num_seqs_total=n_seq)
                loss = agg(pl + cfg.vf_coef * vl - cfg.entropy_coef * ent)
                check_finite(loss, "PPO loss")
                tr.backward(loss)
                # aggregate_loss values are this micro-batch's share of the minibatch total: they add up;
                # per-micro-batch means (clip fractions, ...) are weighted by the micro-batch's size.
                shares = {"loss/policy": agg(pl.detach()), "loss/value": agg(vl.detach()), "loss/total": loss,
                          "policy/entropy": agg(ent.detach())}
                for k, v in shares.items():
                    add(k, v, 1.0 / n_updates)
                for k, v in {**lm, **vm}.items():
                    add(k, v, len(idx) / len(mb) / n_updates)
            add("grad/norm", tr.step(), 1.0 / n_updates)
    return sums


def _optimizer(ac: ActorCritic, cfg: PPOConfig) -> torch.optim.Optimizer:
    """AdamW: policy parameters at lr, critic-only parameters at critic_lr; no decay on 1-D parameters."""
    groups = []
    for params, lr in ((list(ac.policy.parameters()), cfg.lr), (ac.critic_only_parameters(), cfg.critic_lr)):
        params = [p for p in params if p.requires_grad]
        groups.append({"params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": cfg.weight_decay})
        groups.append({"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
    return adamw(groups, lr=cfg.lr, fused=cfg.fused_adamw)


def train_ppo(model, tokenizer, engine, task, examples, cfg: PPOConfig, *, out_dir, seed: int = 0,
              evaluate: Callable[[torch.nn.Module], float] | None = None, resume: bool = False,
              name: str = "ppo", log_fn: Callable[[str], None] = print,
              dist: DistributedConfig | None = None) -> dict[str, Any]:
    """The PPO loop (module doc); `model` is the policy, trained in place. Checkpoints hold policy + critic.

    Several ranks (`dist.deepspeed`, ZeRO-2 or 3): each samples prompts_per_step / world prompts and trains on
    its rows with globally normalised losses; advantages are whitened with the statistics of all ranks' tokens,
    and the adaptive KL controller sees the mean over ranks (so its coefficient stays identical on every rank).
    ZeRO-3: generation, evals and weight sync run inside `tr.gathered()` (full weights, no collectives); the
    scoring and update passes run equally often on every rank (every rank holds the same number of rows).
    LoRA: the policy trains adapters, the reference is the policy with adapters off, and a separate critic has
    its own adapters on a copy of the base trunk (rlvr.models.critic)."""
    from verifiers.pool import health

    ctx = context()
    if cfg.prompts_per_step % ctx.world_size:
        raise ConfigError(f"{name}.prompts_per_step={cfg.prompts_per_step} must be a multiple of the number of "
                          f"processes ({ctx.world_size})")
    if cfg.bf16_params:
        check_bf16_params(model)
    # bf16_params: the reference in bf16 too, so the KL penalty starts at exactly 0
    ref_model = reference_model(model, param_dtype=torch.bfloat16 if cfg.bf16_params else None) \
        if cfg.uses_reference else None
    ac = ActorCritic(model, build_critic(model, cfg.critic, cfg.critic_init))
    opt = _optimizer(ac, cfg)
    sched = build_scheduler(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, kind=cfg.schedule)
    tr = prepare(ac, opt, dist, grad_clip=cfg.grad_clip, bf16=cfg.bf16, bf16_params=cfg.bf16_params)
    kl_ctl = make_kl_controller(cfg)
    ckpts = tr.checkpoints(out_dir, keep_last=cfg.keep_last)
    step, cursor, evals = 0, 0, []
    last = ckpts.latest() if resume else None
    if last is not None:
        ckpts.restore(last, ac, opt, sched)
        step, evals = last.state["step"], last.state.get("evals", [])
        cursor = last.state["cursors"][ctx.rank] if "cursors" in last.state else last.state["cursor"]
        kl_ctl.value = last.state["kl_coef"]
        log_fn(f"{name}: resumed from {last.path} (step {step})")
    with tr.gathered():   # ZeRO-3: generation, evals and weight sync see full weights and run no collectives
        sync_weights(engine, model)
    stream = PromptStream(len(examples), seed, cursor, rank=ctx.rank, world=ctx.world_size)
    sampling = cfg.sampling().model_copy(update={"prompts_per_step": cfg.prompts_per_step // ctx.world_size})
    logger = rank_logger(out_dir, name=name, total_steps=cfg.steps, resume_step=step if last else None,
                           show_keys=["reward/mean", "kl/coef", "eval/pass@1"])
    t_start = time.time()
    try:
        while step < cfg.steps:
            t0 = time.time()
            ac.eval()
            with tr.gathered():
                batch = collect_batch(engine, task, examples, stream, sampling, tokenizer,
                                      seed=(seed * 100_000 + step) * ctx.world_size + ctx.rank)
            t1 = time.time()
            metrics = {**batch.metrics, "kl/coef": kl_ctl.value}
            data = prepare_rollout(tr.compute, ref_model, batch.packed, batch.rewards, cfg, kl_ctl.value,
                                   dense=batch.process[0] if batch.process is not None else None)
            metrics.update(data.metrics)
            ac.train()
            gen = torch.Generator().manual_seed(seed * 100_003 + step)    # minibatch order: resumable
            metrics.update(ppo_update(ac, tr, data, cfg, gen))
            with tr.gathered():
                sync_weights(engine, model)
            sched.step()
            kl_mean = ctx.reduce_metrics({"kl": data.metrics["kl/seq_sum_mean"]})["kl"]
            kl_ctl.update(kl_mean, n_steps=ctx.all_sum(len(batch.packed)))
            step += 1
            n_tok = int(batch.packed.completion_mask.sum())
            metrics.update({"time/train_s": time.time() - t1, "time/step_s": time.time() - t0,
                            "perf/train_tokens": n_tok, "lr": sched.get_last_lr()[0],
                            "response/length_mean": n_tok / len(batch.packed)})
            metrics["perf/tokens_per_s"] = n_tok * cfg.ppo_epochs / max(1e-9, metrics["time/train_s"])
            metrics.update({f"verify/{k}": v for k, v in health().items()})
            metrics = ctx.reduce_metrics(metrics, sum_keys=("loss/policy", "loss/value", "loss/total",
                                                            "perf/tokens_per_s", "perf/train_tokens"))
            if evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                with tr.gathered():
                    score = ctx.broadcast_object(float(evaluate(model)))
                evals.append((step, score))
                metrics["eval/pass@1"] = score
            logger.log(step, metrics)
            if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                ckpts.save(step, ac, opt, sched, state={"cursor": stream.cursor, "evals": evals,
                                                        "kl_coef": kl_ctl.value,
                                                        "cursors": ctx.all_gather_object(stream.cursor)})
    except NonFiniteError as e:
        good = ckpts.latest()
        where = f"last good checkpoint: {good.path}" if good else "no checkpoint was written yet"
        raise NonFiniteError(f"{name} step {step + 1}: {e}; stopping ({where})") from None
    finally:
        logger.close()
    summary = {"steps": step, "evals": evals, "final_pass@1": evals[-1][1] if evals else None,
               "kl_coef": kl_ctl.value, "wall_s": time.time() - t_start}
    if ctx.is_main:
        atomic_write_json(Path(out_dir) / f"{name}_summary.json", summary)
    return summary
