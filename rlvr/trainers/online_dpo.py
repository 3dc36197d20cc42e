"""Online / iterative DPO and SPIN: every round samples from the current policy, builds preference pairs, and
trains one DPO round (`rlvr.trainers.dpo.train_dpo`, any loss of its registry) against a reference that is
the policy at the round's start (or, with refresh_reference=false, the initial model).

Pair builders (looked up by the `pairs` knob; register more with `register_pair_builder`):
  verifier  K samples per prompt scored by the task's verifiers (a reward model plugs in as a verifier); pair =
            best vs worst reward; prompts whose K rewards all tie are dropped (GRPO's dynamic sampling does
            exactly this). Iterative DPO: Xiong et al. 2024, arXiv:2312.11456; online AI feedback: Guo et al.
            2024, arXiv:2402.04792.
  spin      SPIN (Chen et al. 2024, arXiv:2401.01335): chosen = the SFT target (gold completion rendered by
            `target`), rejected = the current model's own sample; pairs whose sample equals the target carry
            no signal and are dropped. Each round's reference is the previous round's model (the opponent).

Rounds are resumable: round r lives in `round-<r>/` (pairs.pt, the DPO run with its checkpoints, DONE.json);
a finished round is skipped and its final checkpoint loaded; an unfinished one reuses its saved pairs and
continues from its latest checkpoint.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import model_validator

from rlvr.algos.registry import Registry
from rlvr.distributed import DistributedConfig, context, reference_model
from rlvr.errors import ConfigError
from rlvr.trainers.checkpoint import CheckpointManager, atomic_write_json
from rlvr.trainers.config_fields import SamplingFields
from rlvr.trainers.dpo import DPOConfig, PrefItem, train_dpo
from rlvr.trainers.grpo import GRPOConfig, PromptStream, collect_batch
from rlvr.trainers.logger import rank_logger

__all__ = ["OnlineDPOConfig", "PairContext", "register_pair_builder", "get_pair_builder", "verifier_pairs",
           "spin_pairs", "train_online_dpo"]


class OnlineDPOConfig(SamplingFields):
    enabled: bool = False
    """run this stage at all"""
    rounds: int = 3
    """sample → label → train rounds"""
    prompts_per_round: int = 64
    """prompts sampled per round (fresh prompts each round, cycling through the split)"""
    pairs: str = "verifier"
    """pair builder: verifier (best vs worst of K samples) | spin (SFT target vs own sample)"""
    samples_per_prompt: int = 4
    """K samples per prompt for the verifier builder"""
    target: str = "{solution}"
    """spin: chosen completion, a template over the example's fields (`gold`, `question`, meta fields)"""
    verify_timeout: float = 5.0
    """per-call verifier deadline (seconds)"""
    refresh_reference: bool = True
    """reference = the policy at each round's start (iterative DPO, SPIN); false: always the initial model"""
    dpo: DPOConfig = DPOConfig(steps=20, lr=1e-5)
    """the DPO round (loss, β, steps per round, batch, lr, ...)"""

    @model_validator(mode="after")
    def _check(self) -> "OnlineDPOConfig":
        if self.pairs not in PAIR_BUILDERS:
            raise ValueError(f"unknown pair builder {self.pairs!r}; known: {', '.join(PAIR_BUILDERS.names())}")
        if self.rounds < 1 or self.prompts_per_round < 1:
            raise ValueError("rounds and prompts_per_round must be >= 1")
        if self.pairs == "verifier" and self.samples_per_prompt < 2:
            raise ValueError("the verifier pair builder needs samples_per_prompt >= 2 (best vs worst)")
        return self


@dataclass
class PairContext:
    """What a pair builder may use."""

    engine: Any
    task: Any
    tokenizer: Any
    examples: Sequence[Any]
    cfg: OnlineDPOConfig


PAIR_BUILDERS = Registry("pair builder")


def register_pair_builder(name: str):
    """Register `fn(ctx, round_idx, seed) -> (items, metrics)` as pair builder `name`."""
    return PAIR_BUILDERS.register(name)


def get_pair_builder(name: str) -> Callable[..., tuple[list[PrefItem], dict[str, float]]]:
    return PAIR_BUILDERS.get(name)


def _round_stream(ctx: PairContext, round_idx: int, seed: int) -> PromptStream:
    """Round r reads prompts r·n .. (r+1)·n - 1 of the seeded prompt order: fresh prompts every round."""
    return PromptStream(len(ctx.examples), seed, cursor=round_idx * ctx.cfg.prompts_per_round)


@register_pair_builder("verifier")
def verifier_pairs(ctx: PairContext, round_idx: int, seed: int) -> tuple[list[PrefItem], dict[str, float]]:
    """K samples per prompt → (best, worst) by verifier reward; all-tie prompts are dropped."""
    c = ctx.cfg
    sampling = GRPOConfig(prompts_per_step=c.prompts_per_round, group_size=c.samples_per_prompt,
                          temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                          verify_timeout=c.verify_timeout, dynamic_sampling=True, max_sampling_rounds=1)
    batch = collect_batch(ctx.engine, ctx.task, ctx.examples, _round_stream(ctx, round_idx, seed), sampling,
                          ctx.tokenizer, seed=seed * 1000 + round_idx)
    items: list[PrefItem] = []
    if batch.packed is not None:
        pb, K = batch.packed, c.samples_per_prompt
        for g in range(len(pb) // K):
            rows = range(g * K, (g + 1) * K)
            best = max(rows, key=lambda i: (batch.rewards[i].item(), -i))    # first of the ties: deterministic
            worst = min(rows, key=lambda i: (batch.rewards[i].item(), i))
            prompt = pb.prompt_ids[best][pb.prompt_mask[best]].tolist()
            items.append(PrefItem(tuple(prompt), tuple(pb.completion_ids[best][pb.completion_mask[best]].tolist()),
                                  tuple(pb.completion_ids[worst][pb.completion_mask[worst]].tolist())))
    metrics = {k: v for k, v in batch.metrics.items() if k.startswith(("reward/", "outcome/", "time/"))}
    metrics.update({"pairs/kept": len(items), "pairs/dropped_ties": batch.metrics["sampling/dropped_groups"]})
    return items, metrics


@register_pair_builder("spin")
def spin_pairs(ctx: PairContext, round_idx: int, seed: int) -> tuple[list[PrefItem], dict[str, float]]:
    """chosen = SFT target, rejected = one sample of the current model; identical pairs are dropped."""
    from rlvr.rollout import SamplingParams

    c, tok = ctx.cfg, ctx.tokenizer
    exs = [ctx.examples[i] for i in _round_stream(ctx, round_idx, seed).take(c.prompts_per_round)]
    params = SamplingParams(n=1, temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                            seed=seed * 1000 + round_idx)
    t0 = time.time()
    groups = ctx.engine.generate([ctx.task.render(e, tok) for e in exs], params)
    items, identical = [], 0
    for ex, (r,) in zip(exs, groups):
        fields = {**ex.meta, "gold": ex.gold, "question": ex.question}
        try:
            target = c.target.format(**fields)
        except KeyError as e:
            raise ConfigError(f"target: field {e} is not in the task's examples "
                              f"(fields: {', '.join(sorted(fields))})") from None
        chosen = tuple(tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        rejected = tuple(r.completion_ids)
        if chosen == rejected:
            identical += 1
            continue
        items.append(PrefItem(tuple(r.prompt_ids), chosen, rejected))
    return items, {"pairs/kept": len(items), "pairs/identical": identical, "time/generate_s": time.time() - t0}


def _save_items(path: Path, items: list[PrefItem], metrics: dict[str, float]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    torch.save({"items": [(it.prompt, it.first, it.second, it.desirable) for it in items], "metrics": metrics}, tmp)
    os.replace(tmp, path)


def _load_items(path: Path) -> tuple[list[PrefItem], dict[str, float]]:
    saved = torch.load(path, weights_only=True)
    return [PrefItem(*map(tuple, row[:3]), bool(row[3])) for row in saved["items"]], saved["metrics"]


def train_online_dpo(model, tokenizer, engine, task, examples, cfg: OnlineDPOConfig, *, out_dir, seed: int = 0,
                     evaluate: Callable[[torch.nn.Module], float] | None = None, resume: bool = False,
                     name: str = "online_dpo", log_fn: Callable[[str], None] = print,
                     dist: DistributedConfig | None = None) -> dict[str, Any]:
    """Rounds of sample → pair → DPO (module doc). `model` is trained in place; one metrics row per round.

    Several ranks: every rank samples the same pairs (same seeds, same weights: duplicated generation, no
    communication) and `train_dpo` trains each rank on its share of them; rank 0 writes the files."""
    out_dir = Path(out_dir)
    main = context().is_main
    fixed_ref = None if cfg.refresh_reference else reference_model(model)   # LoRA: adapters off, no copy
    ctx = PairContext(engine, task, tokenizer, examples, cfg)
    build = get_pair_builder(cfg.pairs)
    first = 0
    while resume and first < cfg.rounds and (out_dir / f"round-{first:02d}" / "DONE.json").exists():
        first += 1
    if first:       # continue from the last finished round's final weights
        last = CheckpointManager(out_dir / f"round-{first - 1:02d}").latest()
        if last is not None:
            CheckpointManager(out_dir / f"round-{first - 1:02d}").restore(last, model)
        log_fn(f"{name}: rounds 0..{first - 1} already complete, continuing")
    logger = rank_logger(out_dir, name=name, total_steps=cfg.rounds, resume_step=first if resume else None,
                           show_keys=["pairs/kept", "eval/pass@1"])
    t_start = time.time()
    try:
        for r in range(first, cfg.rounds):
            rdir = out_dir / f"round-{r:02d}"
            rdir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            if resume and (rdir / "pairs.pt").exists():
                items, metrics = _load_items(rdir / "pairs.pt")
            else:
                engine.update_weights(model)
                model.eval()
                items, metrics = build(ctx, r, seed)
                if main:
                    _save_items(rdir / "pairs.pt", items, metrics)
            if items:
                s = train_dpo(model, tokenizer, items, cfg.dpo, out_dir=rdir, seed=seed * 1000 + r,
                              ref_model=fixed_ref, resume=resume, name="dpo", log_fn=log_fn, dist=dist)
                metrics.update(_last_row(rdir / "dpo_metrics.jsonl"))
                metrics["dpo/steps"] = s["steps"]
            else:
                log_fn(f"{name} round {r}: no pairs (every prompt tied); nothing to train on")
            engine.update_weights(model)
            if evaluate is not None:
                metrics["eval/pass@1"] = float(evaluate(model))
            metrics["time/round_s"] = time.time() - t0
            logger.log(r + 1, metrics)
            if main:
                atomic_write_json(rdir / "DONE.json", metrics)
            context().barrier()
    finally:
        logger.close()
    evals = [(row["step"], row["eval/pass@1"]) for row in logger.rows if "eval/pass@1" in row]
    summary = {"steps": cfg.rounds, "rounds": len(logger.rows), "evals": evals,
               "final_pass@1": evals[-1][1] if evals else None, "wall_s": time.time() - t_start}
    if main:
        atomic_write_json(out_dir / f"{name}_summary.json", summary)
    return summary


def _last_row(path: Path) -> dict[str, float]:
    """The final DPO step's metrics, prefixed `dpo/`, for the round's row."""
    from rlvr.trainers.logger import read_jsonl

    rows = read_jsonl(path)
    keep = ("loss/", "rewards/", "logps/", "kto/")
    return {f"dpo/{k}": v for k, v in (rows[-1] if rows else {}).items() if k.startswith(keep)}
