"""Bradley-Terry reward-model training: a scalar head on any HF causal LM, trained on preference pairs or
K-wise rankings; reports pairwise accuracy on held-out comparisons.

    r(x, y) = head(h_last(x ⊕ y ⊕ EOS))                                   one scalar per sequence
    loss    = Σ_groups 1/(G·C(K,2)) Σ_{i<j} [ -log σ(r_i - r_j - m) + c·(r_i + r_j)² ]

How this departs from a textbook RM trainer (each is a config knob):
- a K-wise ranking contributes all its C(K, 2) pairs from ONE forward over its K responses, weighted
  1/C(K, 2) so a prompt counts once however long its ranking (InstructGPT, arXiv:2203.02155, sec. 3.5);
- an optional margin m (config `margin` plus a per-record `margin` field, Llama 2 style);
- an optional reward-centring term c·(r_i + r_j)² (Eisenstein et al. 2023, arXiv:2312.09244), since BT only
  fixes reward differences;
- sequences are truncated from the LEFT (the end of the dialogue, where chosen and rejected differ, is kept).

Data (JSONL or JSONL.gz, one record per line; formats may be mixed):
    {"chosen": "...", "rejected": "..."}                   full texts (HH-RLHF); the shared dialogue prefix
                                                           up to the last "Assistant:" becomes the prompt
    {"prompt": "...", "chosen": "...", "rejected": "...", "margin": 1.0}
    {"prompt": "...", "ranked": ["best", "second", ..., "worst"]}
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import field_validator, model_validator

from rlvr.algos import bradley_terry_loss, pairs_from_ranking, reward_centering
from rlvr.distributed import DistributedConfig, LoRAConfig, context, prepare, shard
from rlvr.errors import DataError
from rlvr.models.value_head import ValueHeadModel, last_token_index, one_token_scores, right_pad
from rlvr.trainers.checkpoint import atomic_write_json
from rlvr.trainers.common import NonFiniteError, autocast, build_optimizer, build_scheduler, check_finite
from rlvr.trainers.config_fields import CheckpointFields, MasterWeightsFields, OptimFields
from rlvr.trainers.logger import rank_logger
from rlvr.trainers.sft import batch_indices

__all__ = ["RMConfig", "PreferenceGroup", "read_preferences", "split_holdout", "encode_sequence",
           "score_texts", "group_loss", "evaluate_rm", "train_reward_model", "save_model_dir", "read_jsonl_any"]

_ASSISTANT = "\n\nAssistant:"


class RMConfig(OptimFields, MasterWeightsFields, CheckpointFields):
    lr: float = 1e-4
    """peak learning rate (AdamW)"""
    model: str = "tiny"
    """causal LM to put the head on ('tiny', a local HF dir or hub id), or a saved reward model to go on"""
    data: list[str] = []
    """training files (JSONL / JSONL.gz; pairs or rankings, see module doc)"""
    data_limit: int | None = None
    """read at most this many records per file"""
    eval_data: list[str] = []
    """held-out files; when empty, `eval_fraction` of the training groups is held out"""
    eval_fraction: float = 0.1
    """share of groups held out when eval_data is empty (0: no eval)"""
    output_dir: str = "runs/rm"
    """run directory (checkpoints, metrics, final model in <output_dir>/model)"""
    seed: int = 0
    """data order, hold-out split and head init"""
    max_steps: int = 200
    """optimizer steps"""
    batch_size: int = 16
    """preference groups (prompts) per optimizer step"""
    micro_batch: int = 8
    """groups per forward/backward"""
    margin: float = 0.0
    """margin m added to every pair (per-record margins add to it)"""
    center_coef: float = 0.0
    """reward-centring coefficient c (0: off)"""
    max_length: int = 512
    """tokens per sequence; longer ones lose their beginning"""
    template: str = "{prompt}{response}"
    """how prompt and response are joined (saved with the model; scorers reuse it)"""
    eval_every: int = 50
    """steps between held-out evaluations (0: only at the end)"""
    eval_batch: int = 32
    """sequences per forward at evaluation"""
    torch_threads: int | None = None
    """torch CPU threads (1 is much faster on a shared, oversubscribed CPU); None: torch's default"""
    lora: LoRAConfig = LoRAConfig()
    """peft LoRA adapters on the trunk (the head trains fully); the saved model is merged (plain layout)"""

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> "RMConfig":
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if "{response}" not in self.template:
            raise ValueError(f"template must contain {{response}}, got {self.template!r}")
        if self.micro_batch < 1 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError("batch_size, micro_batch must be >= 1 and max_length >= 2")
        return self


@dataclass(frozen=True)
class PreferenceGroup:
    """One prompt and K >= 2 responses ordered best first (a pair is K = 2)."""

    prompt: str
    responses: tuple[str, ...]
    margin: float = 0.0


# ----------------------------------------------------------------------------------------------------- data
def read_jsonl_any(path: str | Path, limit: int | None = None) -> list[tuple[int, dict]]:
    """(line number, record) of a .jsonl or .jsonl.gz file; a bad line is a DataError naming file:line.
    Parsing is tasks.data.read_jsonl's; this adds the line numbers callers put in their own messages."""
    from tasks.data import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = read_jsonl(path)[:limit]
    return [(int(r.where.rsplit(":", 1)[1]), r.data) for r in rows]


def _split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """HH-RLHF full texts -> (shared prompt up to the last 'Assistant:', chosen reply, rejected reply)."""
    cut = chosen.rfind(_ASSISTANT)
    if cut < 0 or not rejected.startswith(chosen[:cut + len(_ASSISTANT)]):
        return "", chosen, rejected
    cut += len(_ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _to_group(rec: dict, where: str) -> PreferenceGroup:
    margin = rec.get("margin", 0.0)
    if not isinstance(margin, (int, float)):
        raise DataError(f"{where}: field 'margin' must be a number, got {margin!r}")
    if "ranked" in rec:
        ranked = rec["ranked"]
        if not (isinstance(ranked, list) and len(ranked) >= 2 and all(isinstance(r, str) for r in ranked)):
            raise DataError(f"{where}: field 'ranked' must be a list of >= 2 strings")
        prompt, responses = rec.get("prompt", ""), tuple(ranked)
    elif "chosen" in rec and "rejected" in rec:
        if not all(isinstance(rec[k], str) for k in ("chosen", "rejected")):
            raise DataError(f"{where}: fields 'chosen' and 'rejected' must be strings")
        if "prompt" in rec:
            prompt, responses = rec["prompt"], (rec["chosen"], rec["rejected"])
        else:
            prompt, c, r = _split_dialogue(rec["chosen"], rec["rejected"])
            responses = (c, r)
    else:
        raise DataError(f"{where}: needs 'chosen' and 'rejected', or 'ranked' (keys: {', '.join(sorted(rec))})")
    if not isinstance(prompt, str):
        raise DataError(f"{where}: field 'prompt' must be a string")
    return PreferenceGroup(prompt, responses, float(margin))


def read_preferences(paths: Sequence[str | Path], limit: int | None = None) -> list[PreferenceGroup]:
    """All preference groups of `paths` (pairs and rankings may be mixed, see module doc)."""
    groups = []
    for path in paths:
        groups.extend(_to_group(rec, f"{path}:{lineno}") for lineno, rec in read_jsonl_any(path, limit))
    return groups


def split_holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of range(n) into (train, held-out) index lists; held-out has round(n·fraction) items."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7)).tolist()
    k = int(round(n * fraction))
    return sorted(perm[k:]), sorted(perm[:k])


def encode_sequence(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Token ids of `text` + EOS (BOS first when the tokenizer adds one), keeping the LAST max_length."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        ids = [tokenizer.bos_token_id] + ids
    return ids[-max_length:]


# ----------------------------------------------------------------------------------------------------- model
def score_texts(model: ValueHeadModel, rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Token id rows -> reward per row [N] (the score at each row's last real token, EOS)."""
    ids, attn = right_pad(rows, pad_id)
    scores = model(ids.to(model.head.weight.device), attn.to(model.head.weight.device))   # [N, L]
    return scores.gather(1, last_token_index(attn).to(scores.device)[:, None]).squeeze(1)


def group_loss(rewards: torch.Tensor, sizes: Sequence[int], margins: torch.Tensor, cfg: RMConfig,
               num_groups: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry loss over all C(K,2) pairs of each group (rewards [N], groups laid out consecutively).

    sizes: K per group; margins [G] per-group margin (cfg.margin is added). Each group's pairs are weighted
    1/(C(K,2)·num_groups), so the sum over all micro-batches of a step is the mean over its groups.
    Returns (loss scalar, metrics with pair counts/accuracy sums for the caller to average).
    """
    chosen, rejected, weights, m = [], [], [], []
    margins = margins.to(rewards.device)
    offset = 0
    for g, k in enumerate(sizes):
        pairs = pairs_from_ranking(k) + offset
        chosen.append(pairs[:, 0])
        rejected.append(pairs[:, 1])
        weights.append(torch.full((len(pairs),), 1.0 / (len(pairs) * num_groups), dtype=rewards.dtype))
        m.append(margins[g].expand(len(pairs)))
        offset += k
    ci, ri = torch.cat(chosen), torch.cat(rejected)
    r_c, r_r = rewards[ci], rewards[ri]
    per_pair = bradley_terry_loss(r_c, r_r, torch.cat(m) + cfg.margin)
    if cfg.center_coef:
        per_pair = per_pair + reward_centering(r_c, r_r, cfg.center_coef)
    loss = (per_pair * torch.cat(weights).to(per_pair)).sum()
    diff = (r_c - r_r).detach()
    stats = {"pairs": float(len(diff)), "correct": float(((diff > 0).float() + 0.5 * (diff == 0).float()).sum()),
             "margin_sum": float(diff.sum()), "reward_sum": float(rewards.detach().sum()),
             "sequences": float(len(rewards))}
    return loss, stats


def _encode_groups(groups: Sequence[PreferenceGroup], tokenizer: Any, cfg: RMConfig) -> list[list[list[int]]]:
    return [[encode_sequence(tokenizer, cfg.template.format(prompt=g.prompt, response=r), cfg.max_length)
             for r in g.responses] for g in groups]


@torch.no_grad()
def evaluate_rm(model: ValueHeadModel, encoded: list[list[list[int]]], groups: Sequence[PreferenceGroup],
                pad_id: int, cfg: RMConfig) -> dict[str, float]:
    """Held-out pairwise accuracy (ties count 1/2) and mean BT loss over every pair of every group."""
    model.eval()
    flat = [row for rows in encoded for row in rows]
    order = sorted(range(len(flat)), key=lambda i: len(flat[i]))        # length-sorted: less padding
    rewards = torch.empty(len(flat))
    for s in range(0, len(order), cfg.eval_batch):
        idx = order[s:s + cfg.eval_batch]
        with autocast(cfg.bf16):
            rewards[idx] = score_texts(model, [flat[i] for i in idx], pad_id).float().cpu()
    margins = torch.tensor([g.margin for g in groups])
    loss, st = group_loss(rewards, [len(g.responses) for g in groups], margins, cfg, len(groups))
    return {"eval/pairwise_accuracy": st["correct"] / st["pairs"], "eval/loss": float(loss.detach()),
            "eval/reward_mean": st["reward_sum"] / st["sequences"], "eval/pairs": st["pairs"]}


def save_model_dir(model: torch.nn.Module, tokenizer: Any, path: str | Path) -> Path:
    """Write model + tokenizer to `path` atomically (temp dir + rename); replaces an older one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.rename(tmp, path)
    return path


# -------------------------------------------------------------------------------------------------- training
def train_reward_model(cfg: RMConfig, *, resume: bool = False, log_fn: Callable[[str], None] = print,
                       dist: DistributedConfig | None = None) -> dict[str, Any]:
    """Train a BT reward model as `cfg` says; writes <output_dir>/model and rm_summary.json. Returns the summary.

    Several ranks (`dist.deepspeed`): each rank trains on its strided share of every step's groups; the loss is
    already normalised by the whole step's group count, so the summed gradient is the single-process one.
    Accuracy and reward statistics are summed over ranks; evals run on every rank (same weights, same numbers;
    ZeRO-3 gathers the weights for them); rank 0 writes metrics, checkpoints' metadata and the final model.
    """
    from rlvr.models.value_head import load_value_model
    from rlvr.trainers.checkpoint import seed_everything

    if not cfg.data:
        raise DataError("data: give at least one training file")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    groups = read_preferences(cfg.data, cfg.data_limit)
    if cfg.eval_data:
        train, held = groups, read_preferences(cfg.eval_data, cfg.data_limit)
    else:
        tr, ho = split_holdout(len(groups), cfg.eval_fraction, cfg.seed)
        train, held = [groups[i] for i in tr], [groups[i] for i in ho]
    if not train:
        raise DataError(f"data: no training groups in {', '.join(cfg.data)}")
    model, tok = load_value_model(cfg.model, expect_kind="reward",
                                  meta={"kind": "reward", "template": cfg.template, "max_length": cfg.max_length})
    model.meta.update(kind="reward", template=cfg.template, max_length=cfg.max_length)
    model.add_lora(cfg.lora)                           # LoRA: adapters on the trunk, the head fully trained
    enc_train, enc_held = _encode_groups(train, tok, cfg), _encode_groups(held, tok, cfg)
    out = Path(cfg.output_dir)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=cfg.fused_adamw)
    sched = build_scheduler(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, kind=cfg.schedule)
    tr, ctx = prepare(model, opt, dist, grad_clip=cfg.grad_clip, bf16=cfg.bf16, bf16_params=cfg.bf16_params), \
        context()
    ckpts = tr.checkpoints(out, keep_last=cfg.keep_last)
    step, evals = 0, []
    last = ckpts.latest() if resume else None
    if last is not None:
        ckpts.restore(last, model, opt, sched)
        step, evals = last.state["step"], last.state.get("evals", [])
        log_fn(f"rm: resumed from {last.path} (step {step})")
    logger = rank_logger(out, name="rm", total_steps=cfg.max_steps, resume_step=step if last else None,
                           show_keys=["loss/rm", "rm/accuracy", "eval/pairwise_accuracy"])
    t_start = time.time()
    try:
        while step < cfg.max_steps:
            model.train()
            t0 = time.time()
            idx = batch_indices(len(train), step, cfg.batch_size, cfg.seed)
            mine = shard(idx, ctx)                      # this rank's groups; the loss divides by len(idx)
            totals = dict.fromkeys(("pairs", "correct", "margin_sum", "reward_sum", "sequences"), 0.0)
            loss_sum = 0.0
            for s in ctx.micro_batches(len(mine), cfg.micro_batch):   # same count on every rank
                if s.start == s.stop:
                    tr.backward_nothing(one_token_scores)
                    continue
                mb = mine[s]
                rows = [row for i in mb for row in enc_train[i]]
                with autocast(cfg.bf16):
                    rewards = score_texts(tr.compute, rows, tok.pad_token_id)
                margins = torch.tensor([train[i].margin for i in mb])
                loss, st = group_loss(rewards, [len(train[i].responses) for i in mb], margins, cfg, len(idx))
                check_finite(loss, f"rm step {step + 1}: loss")
                tr.backward(loss)
                loss_sum += float(loss.detach())
                totals = {k: totals[k] + v for k, v in st.items()}
            gnorm = tr.step()
            sched.step()
            step += 1
            totals = {k: ctx.all_sum(v) for k, v in totals.items()}
            n_tok = sum(len(row) for i in idx for row in enc_train[i])
            metrics = {"loss/rm": loss_sum, "rm/accuracy": totals["correct"] / totals["pairs"],
                       "rm/margin_mean": totals["margin_sum"] / totals["pairs"],
                       "rm/reward_mean": totals["reward_sum"] / totals["sequences"], "grad/norm": gnorm,
                       "lr": sched.get_last_lr()[0], "perf/tokens_per_s": n_tok / max(1e-9, time.time() - t0)}
            metrics = ctx.reduce_metrics(metrics, sum_keys=("loss/rm",))
            if held and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps):
                with tr.gathered():
                    ev = evaluate_rm(model, enc_held, held, tok.pad_token_id, cfg)
                evals.append((step, ev["eval/pairwise_accuracy"]))
                metrics.update(ev)
            logger.log(step, metrics)
            if step == cfg.max_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                ckpts.save(step, model, opt, sched, state={"evals": evals}, tokenizer=tok)
    except NonFiniteError as e:
        good = ckpts.latest()
        where = f"last good checkpoint: {good.path}" if good else "no checkpoint was written yet"
        raise NonFiniteError(f"rm: {e}; stopping ({where})") from None
    finally:
        logger.close()
    with tr.gathered():                                 # ZeRO-3: full weights for the save
        if ctx.is_main:
            save_model_dir(model, tok, out / "model")
    summary = {"steps": step, "train_groups": len(train), "eval_groups": len(held), "evals": evals,
               "eval/pairwise_accuracy": evals[-1][1] if evals else None, "model": str(out / "model"),
               "wall_s": time.time() - t_start}
    if ctx.is_main:
        atomic_write_json(out / "rm_summary.json", summary)
    ctx.barrier()
    return summary
