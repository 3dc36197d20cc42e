"""Supervised fine-tuning with a completion-only loss — the R1 cold start, and the labelled-data control.

Differences from a textbook SFT loop: it can stop on a held-out *eval threshold* (greedy pass@1 reaches
`stop_at_pass1`) instead of a fixed step count, and it is resumable after kill -9 (data order is a pure
function of seed and step, so the cursor is just the step).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rlvr.distributed import DistributedConfig, context, prepare, shard
from rlvr.trainers.checkpoint import atomic_write_json
from rlvr.trainers.common import (NonFiniteError, autocast, build_optimizer, build_scheduler, check_finite,
                                  module_device, torch_threads)
from rlvr.trainers.config_fields import CheckpointFields, MasterWeightsFields, OptimFields
from rlvr.trainers.logger import rank_logger


class SFTConfig(OptimFields, MasterWeightsFields, CheckpointFields):
    lr: float = 1e-3
    """peak learning rate (AdamW)"""
    enabled: bool = False
    """run this stage at all (a recipe turns it on with `enabled: true`)"""
    max_steps: int = 1000
    """upper bound on optimizer steps"""
    batch_size: int = 64
    """sequences per optimizer step (split into grad_accum micro-batches)"""
    grad_accum: int = 1
    """micro-batches per optimizer step"""
    completion_only: bool = True
    """mask prompt tokens out of the loss"""
    max_length: int = 512
    """truncate prompt+completion to this many tokens (also the packed row length)"""
    packing: bool = False
    """concatenate each micro-batch's examples into rows of up to max_length tokens; per-example position ids
    make attention block-diagonal (no attending across examples) and the loss is unchanged, only padding goes"""
    eval_every: int = 50
    """steps between held-out evaluations (0: never)"""
    stop_at_pass1: float | None = None
    """stop as soon as held-out greedy pass@1 >= this (the R1-mini cold start)"""
    eval_every_near: int = 2
    """steps between evals once pass@1 >= near_fraction * stop_at_pass1 (accuracy can jump fast there)"""
    near_fraction: float = 0.5
    """how close to the threshold the denser eval schedule starts"""
    torch_threads: int | None = None
    """torch intra-op threads for this stage and its evals, restored afterwards (None: the process's setting).
    A cold start runs alone, so it can use both cores of a 2-core box: 1.4x faster for the tiny model"""


@dataclass(frozen=True)
class SFTExample:
    prompt: str
    completion: str


def tokenize_pairs(examples: list[SFTExample], tokenizer: Any, max_length: int,
                   completion_only: bool) -> list[tuple[list[int], list[bool]]]:
    """Token ids of prompt+completion+EOS and a loss mask (True on completion tokens and EOS)."""
    out = []
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
            p = [tokenizer.bos_token_id] + p
        ids = (p + c)[:max_length]
        mask = ([not completion_only] * len(p) + [True] * len(c))[:max_length]
        out.append((ids, mask))
    return out


def collate(rows: list[tuple[list[int], list[bool]]], pad_id: int) -> dict[str, torch.Tensor]:
    L = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), L), dtype=torch.long)
    labels = torch.full((len(rows), L), -100, dtype=torch.long)
    for i, (r, m) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        attn[i, :len(r)] = 1
        lab = torch.tensor(r)
        lab[~torch.tensor(m)] = -100
        labels[i, :len(r)] = lab
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Indices for `step`: epochs are seeded permutations, so the data cursor is a function of step alone."""
    out = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset:offset + take].tolist())
        pos += take
    return out


def pack_groups(lengths: list[int], capacity: int) -> list[list[int]]:
    """Greedy first-fit packing in order: indices of `lengths` grouped so each group's total is <= capacity
    (an example longer than capacity gets a row of its own). Deterministic; order inside a row is kept."""
    groups: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        slot = next((g for g, r in enumerate(room) if r >= n), None)
        if slot is None:
            groups.append([i])
            room.append(capacity - n)
        else:
            groups[slot].append(i)
            room[slot] -= n
    return groups


def collate_packed(rows: list[tuple[list[int], list[bool]]], pad_id: int, capacity: int) -> dict[str, torch.Tensor]:
    """Examples concatenated into rows of <= capacity tokens. No attention mask: position ids restart at 0 for
    every example (and for the padding tail), which HF models turn into a block-diagonal causal mask, so no
    token attends across examples. Each example's first token is unlabelled (-100), as the shift in `sft_loss`
    leaves it unpredicted in the unpacked layout too, so no loss term reads the previous example."""
    groups = pack_groups([len(ids) for ids, _ in rows], capacity)
    L = max(sum(len(rows[i][0]) for i in g) for g in groups)
    ids = torch.full((len(groups), L), pad_id, dtype=torch.long)
    pos = torch.zeros((len(groups), L), dtype=torch.long)
    labels = torch.full((len(groups), L), -100, dtype=torch.long)
    for r, g in enumerate(groups):
        at = 0
        for i in g:
            toks, mask = rows[i]
            n = len(toks)
            ids[r, at:at + n] = torch.tensor(toks)
            pos[r, at:at + n] = torch.arange(n)
            lab = torch.tensor(toks)
            lab[~torch.tensor(mask)] = -100
            lab[0] = -100
            labels[r, at:at + n] = lab
            at += n
        pos[r, at:] = torch.arange(L - at)
    return {"input_ids": ids, "position_ids": pos, "labels": labels}


def sft_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of token NLL over labelled tokens and their count (caller divides by the global count).
    `batch` is `collate`'s (attention_mask) or `collate_packed`'s (position_ids) layout."""
    dev = module_device(model)
    batch = {k: v.to(dev) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   position_ids=batch.get("position_ids"), use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    return nll, int((labels != -100).sum())


def _eval_due(cfg: SFTConfig, step: int, evals: list) -> bool:
    """Every eval_every steps; every eval_every_near steps once close to the stop threshold."""
    if not cfg.eval_every:
        return False
    every = cfg.eval_every
    if cfg.stop_at_pass1 is not None and evals and evals[-1][1] >= cfg.near_fraction * cfg.stop_at_pass1:
        every = min(every, cfg.eval_every_near)
    return step % every == 0 or step == cfg.max_steps


def train_sft(model: torch.nn.Module, tokenizer: Any, examples: list[SFTExample], cfg: SFTConfig, *,
              out_dir, seed: int = 0, evaluate: Callable[[torch.nn.Module], float] | None = None,
              resume: bool = False, name: str = "sft", log_fn: Callable[[str], None] = print,
              dist: DistributedConfig | None = None) -> dict[str, Any]:
    """Train until max_steps or until `evaluate(model) >= cfg.stop_at_pass1`. Returns a summary dict.

    Under several processes (`dist.deepspeed`) each rank trains on its strided share of every step's batch; the
    loss is normalised by the whole batch's token count, so the summed gradient equals the single-process one.
    """
    with torch_threads(cfg.torch_threads):
        return _train_sft(model, tokenizer, examples, cfg, out_dir=out_dir, seed=seed, evaluate=evaluate,
                          resume=resume, name=name, log_fn=log_fn, dist=dist)


def _train_sft(model, tokenizer, examples, cfg: SFTConfig, *, out_dir, seed, evaluate, resume, name, log_fn,
               dist) -> dict[str, Any]:
    if not examples:
        raise ValueError("SFT needs at least one example")
    rows = tokenize_pairs(examples, tokenizer, cfg.max_length, cfg.completion_only)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=cfg.fused_adamw)
    sched = build_scheduler(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, kind=cfg.schedule)
    tr, ctx = prepare(model, opt, dist, grad_clip=cfg.grad_clip, bf16=cfg.bf16, bf16_params=cfg.bf16_params), \
        context()
    ckpts = tr.checkpoints(out_dir, keep_last=cfg.keep_last)
    step, evals = 0, []
    last = ckpts.latest() if resume else None
    if last is not None:
        ckpts.restore(last, model, opt, sched)
        step, evals = last.state["step"], last.state.get("evals", [])
        log_fn(f"{name}: resumed from {last.path} (step {step})")
    logger = rank_logger(out_dir, name=name, total_steps=cfg.max_steps, resume_step=step if last else None,
                           show_keys=["loss/sft", "eval/pass@1"])
    micro = max(1, cfg.batch_size // cfg.grad_accum)
    stopped = bool(evals) and cfg.stop_at_pass1 is not None and evals[-1][1] >= cfg.stop_at_pass1
    t_start = time.time()
    try:
        while step < cfg.max_steps and not stopped:
            model.train()
            t0 = time.time()
            idx = batch_indices(len(rows), step, cfg.batch_size, seed)
            n_tok = sum(sum(rows[i][1][1:]) for i in idx)   # the whole batch's count, on every rank
            mine = shard(idx, ctx)
            total = 0.0
            for s in ctx.micro_batches(len(mine), micro):
                if s.start == s.stop:           # this rank has no rows for this slot (tiny batches only)
                    tr.backward_nothing()
                    continue
                picked = [rows[i] for i in mine[s]]
                batch = collate_packed(picked, tokenizer.pad_token_id, cfg.max_length) if cfg.packing \
                    else collate(picked, tokenizer.pad_token_id)
                with autocast(cfg.bf16):
                    nll, _ = sft_loss(tr.compute, batch)
                loss = nll / max(1, n_tok)  # global token mean across micro-batches (and ranks)
                check_finite(loss, f"{name} step {step + 1}: loss")
                tr.backward(loss)
                total += loss.item()
            gnorm = tr.step()
            sched.step()
            step += 1
            metrics = {"loss/sft": total, "grad/norm": gnorm, "lr": sched.get_last_lr()[0],
                       "perf/tokens_per_s": n_tok / max(1e-9, time.time() - t0)}
            metrics = ctx.reduce_metrics(metrics, sum_keys=("loss/sft",))
            if evaluate is not None and _eval_due(cfg, step, evals):
                score = ctx.broadcast_object(float(evaluate(model)))   # one verdict, so all ranks stop together
                evals.append((step, score))
                metrics["eval/pass@1"] = score
                stopped = cfg.stop_at_pass1 is not None and score >= cfg.stop_at_pass1
            logger.log(step, metrics)
            if stopped or step == cfg.max_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                ckpts.save(step, model, opt, sched, state={"evals": evals})
    except NonFiniteError as e:
        good = ckpts.latest()
        where = f"last good checkpoint: {good.path}" if good else "no checkpoint was written yet"
        raise NonFiniteError(f"{name}: {e}; stopping ({where})") from None
    finally:
        logger.close()
    summary = {"steps": step, "evals": evals, "stopped_on_threshold": stopped,
               "final_pass@1": evals[-1][1] if evals else None, "wall_s": time.time() - t_start}
    if ctx.is_main:
        atomic_write_json(Path(out_dir) / f"{name}_summary.json", summary)
    return summary

