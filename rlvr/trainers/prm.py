"""Process reward model (PRM) training: classify every step of a solution as correct or not, reading a
scalar head at each step's last token (the step separator).

    x = question ⊕ sep ⊕ step_1 ⊕ sep ⊕ ... ⊕ step_n ⊕ sep        sep: `step_separator` (default "\\n")
    p_i = σ(head(h[end_i]))     end_i = index of the last token of "step_i ⊕ sep"
    loss = mean over labelled steps of BCE(p_i, y_i)              y: rating 1 -> 1, -1 -> 0, 0 -> `neutral`

Follows Lightman et al. 2023, "Let's Verify Step by Step" (arXiv:2305.20050), with a scalar head instead of
reading the LM's logits of special tokens. Departures / knobs: neutral ratings map to `positive`, `negative`
or `ignore`; sequences longer than `max_length` lose their beginning (steps that fall off lose their labels).

Data formats (JSONL / JSONL.gz; detected per record, see STEP_FORMATS):
- `steps`: {"question": str, "steps": [str], "labels": [1 | 0 | -1 | null]}       (this repo's native format)
- `prm800k`: the original PRM800K record (question.problem, label.steps[].completions[].rating,
  chosen_completion / human_completion): the chosen path plus every rated alternative at each step;
- `stepwise`: the derived one-row-per-step layout ({instruction, responses, next_response, rating}).
The last two are rebuilt into trajectories: every rated (prefix, step) becomes a path; paths that are a prefix
of another path are merged into it, so each trajectory carries labels for all its rated steps.

Eval on held-out problems: step-level ROC AUC (each rated (prefix, step) counted once) and first-error
detection (ProcessBench, Zheng et al. 2024, arXiv:2412.06559): accuracy on trajectories with an error (the
first step with p < threshold is the first labelled-wrong step), on all-correct ones (no step below the
threshold), and their harmonic mean `first_error_f1`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import field_validator, model_validator

from rlvr.distributed import DistributedConfig, LoRAConfig, context, prepare, shard
from rlvr.errors import DataError
from rlvr.models.value_head import ValueHeadModel, one_token_scores, right_pad
from rlvr.trainers.checkpoint import atomic_write_json
from rlvr.trainers.common import NonFiniteError, autocast, build_optimizer, build_scheduler, check_finite
from rlvr.trainers.config_fields import CheckpointFields, MasterWeightsFields, OptimFields
from rlvr.trainers.logger import rank_logger
from rlvr.trainers.prm_data import (STEP_FORMATS, RatedStep, Rating, StepExample, SyntheticConfig,  # noqa: F401
                                    read_step_data, split_by_problem, synthetic_chains, trajectories_from_rated)
from rlvr.trainers.reward_model import save_model_dir
from rlvr.trainers.sft import batch_indices

__all__ = ["PRMConfig", "SyntheticConfig", "StepExample", "STEP_FORMATS", "read_step_data", "synthetic_chains",
           "trajectories_from_rated", "split_by_problem", "encode_steps", "step_logits", "roc_auc",
           "first_error_metrics", "evaluate_prm", "train_prm"]



class PRMConfig(OptimFields, MasterWeightsFields, CheckpointFields):
    lr: float = 1e-3
    """peak learning rate (AdamW)"""
    model: str = "tiny"
    """causal LM to put the head on ('tiny', a local HF dir or hub id), or a saved PRM to go on"""
    data: list[str] = []
    """training files (formats in the module doc); empty: use `synthetic`"""
    synthetic: SyntheticConfig | None = None
    """generate arithmetic chains instead of reading `data`"""
    data_limit: int | None = None
    """read at most this many records per file"""
    eval_data: list[str] = []
    """held-out files; when empty, `eval_fraction` of the problems is held out (split by question)"""
    eval_fraction: float = 0.1
    """share of problems held out when eval_data is empty"""
    output_dir: str = "runs/prm"
    """run directory (checkpoints, metrics, final model in <output_dir>/model)"""
    seed: int = 0
    """data order, synthetic data and hold-out split"""
    step_separator: str = "\n"
    """text after the question and after every step; its last token carries the step's label"""
    neutral: Literal["positive", "negative", "ignore"] = "positive"
    """what a neutral (0) rating trains as"""
    max_steps: int = 300
    """optimizer steps"""
    batch_size: int = 32
    """trajectories per optimizer step"""
    micro_batch: int = 32
    """trajectories per forward/backward"""
    max_length: int = 512
    """tokens per trajectory; longer ones lose their beginning"""
    threshold: float = 0.5
    """a step with p < threshold counts as wrong (first-error detection)"""
    eval_every: int = 50
    """steps between held-out evaluations (0: only at the end)"""
    eval_batch: int = 64
    """trajectories per forward at evaluation"""
    torch_threads: int | None = None
    """torch CPU threads (1 is much faster on a shared, oversubscribed CPU); None: torch's default"""
    lora: LoRAConfig = LoRAConfig()
    """peft LoRA adapters on the trunk (the head trains fully); the saved model is merged (plain layout)"""

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> "PRMConfig":
        if not self.data and self.synthetic is None:
            raise ValueError("give training `data` files or a `synthetic` section")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not self.step_separator:
            raise ValueError("step_separator must be a non-empty string")
        if self.micro_batch < 1 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError("batch_size, micro_batch must be >= 1 and max_length >= 2")
        return self


# ----------------------------------------------------------------------------------------------------- model
def encode_steps(tokenizer: Any, question: str, steps: Sequence[str], sep: str,
                 max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of question ⊕ sep ⊕ (step ⊕ sep)* and the index of each step's last token.

    Pieces are tokenised one by one, so step boundaries are exact for any tokenizer (the scorer uses this same
    function). Longer than max_length: the first tokens are dropped, and so are the steps that lose any token;
    the returned ends then refer to the LAST len(ends) steps.
    """
    ids = tokenizer(question + sep, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        ids = [tokenizer.bos_token_id] + ids
    spans = []
    for step in steps:
        start = len(ids)
        ids = ids + tokenizer(step + sep, add_special_tokens=False)["input_ids"]
        spans.append((start, len(ids) - 1))
    cut = max(0, len(ids) - max_length)
    return ids[cut:], [end - cut for start, end in spans if start >= cut]


def step_logits(model: ValueHeadModel, rows: list[list[int]], ends: list[list[int]], pad_id: int) -> list[torch.Tensor]:
    """One forward over `rows`; returns per row the logits at its step ends (a [n_i] tensor each)."""
    ids, attn = right_pad(rows, pad_id)
    device = model.head.weight.device
    scores = model(ids.to(device), attn.to(device))                     # [B, L]
    return [scores[i, torch.tensor(e, dtype=torch.long, device=device)] for i, e in enumerate(ends)]


def _targets(labels: Sequence[Rating], neutral: str) -> list[float | None]:
    table = {1: 1.0, -1: 0.0, 0: {"positive": 1.0, "negative": 0.0, "ignore": None}[neutral], None: None}
    return [table[v] for v in labels]


def _encode_all(examples: Sequence[StepExample], tokenizer: Any, cfg: PRMConfig):
    """Per trajectory: (ids, ends, targets), targets aligned with the surviving ends."""
    out = []
    for ex in examples:
        ids, ends = encode_steps(tokenizer, ex.question, ex.steps, cfg.step_separator, cfg.max_length)
        targets = _targets(ex.labels, cfg.neutral)[len(ex.steps) - len(ends):]
        out.append((ids, ends, targets))
    return out


def _labelled(logits: torch.Tensor, targets: Sequence[float | None]) -> tuple[torch.Tensor, torch.Tensor]:
    keep = [i for i, t in enumerate(targets) if t is not None]
    return logits[keep], torch.tensor([targets[i] for i in keep], device=logits.device)


# ------------------------------------------------------------------------------------------------------ eval
def roc_auc(scores: Sequence[float], labels: Sequence[int | bool]) -> float:
    """Exact ROC AUC by the Mann-Whitney U statistic (ties get average ranks; NaN if a class is empty):

        AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)        R₊ = sum of the positives' ranks (1-based, ascending)
    """
    s = torch.as_tensor(list(scores), dtype=torch.float64)
    y = torch.as_tensor([bool(v) for v in labels])
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s, stable=True)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    start = 0
    while start < len(s):                      # average ranks over runs of equal scores
        stop = start
        while stop + 1 < len(s) and sorted_s[stop + 1] == sorted_s[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def first_error_metrics(probs: Sequence[Sequence[float]], targets: Sequence[Sequence[float | None]],
                        threshold: float) -> dict[str, float]:
    """ProcessBench-style first-error detection over fully labelled trajectories (see module doc)."""
    hits = {"error": [], "correct": []}
    for p, t in zip(probs, targets):
        if len(p) != len(t) or any(v is None for v in t) or not t:
            continue
        gold = next((i for i, v in enumerate(t) if v < 0.5), None)
        pred = next((i for i, v in enumerate(p) if v < threshold), None)
        hits["error" if gold is not None else "correct"].append(float(pred == gold))
    acc = {k: sum(v) / len(v) if v else float("nan") for k, v in hits.items()}
    f1 = 2 * acc["error"] * acc["correct"] / (acc["error"] + acc["correct"]) \
        if hits["error"] and hits["correct"] and acc["error"] + acc["correct"] > 0 else float("nan")
    return {"eval/first_error_acc_error": acc["error"], "eval/first_error_acc_correct": acc["correct"],
            "eval/first_error_f1": f1, "eval/trajectories_error": len(hits["error"]),
            "eval/trajectories_correct": len(hits["correct"])}


@torch.no_grad()
def evaluate_prm(model: ValueHeadModel, examples: Sequence[StepExample], encoded, pad_id: int,
                 cfg: PRMConfig) -> dict[str, float]:
    """Step AUC / accuracy / BCE over unique rated steps, and first-error detection over trajectories."""
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    probs: list[list[float]] = [[] for _ in encoded]
    for s in range(0, len(order), cfg.eval_batch):
        idx = order[s:s + cfg.eval_batch]
        with autocast(cfg.bf16):
            logits = step_logits(model, [encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad_id)
        for i, lg in zip(idx, logits):
            probs[i] = torch.sigmoid(lg.float()).cpu().tolist()
    seen, p_all, y_all = set(), [], []
    for ex, (_, ends, targets), p in zip(examples, encoded, probs):
        first = len(ex.steps) - len(ends)
        for j, (pj, tj) in enumerate(zip(p, targets)):
            key = (ex.question, ex.steps[:first + j + 1])
            if tj is not None and key not in seen:
                seen.add(key)
                p_all.append(pj)
                y_all.append(tj)
    if not y_all:
        return {}
    pt, yt = torch.tensor(p_all, dtype=torch.float64), torch.tensor(y_all, dtype=torch.float64)
    out = {"eval/step_auc": roc_auc(p_all, [y > 0.5 for y in y_all]),
           "eval/step_accuracy": float(((pt >= cfg.threshold).double() == yt).double().mean()),
           "eval/loss": float(F.binary_cross_entropy(pt.clamp(1e-7, 1 - 1e-7), yt)),
           "eval/steps": float(len(y_all)), "eval/positive_frac": float(yt.mean())}
    whole = [i for i, ex in enumerate(examples) if len(encoded[i][1]) == len(ex.steps)]   # none truncated away
    out.update(first_error_metrics([probs[i] for i in whole], [encoded[i][2] for i in whole], cfg.threshold))
    return out


# -------------------------------------------------------------------------------------------------- training
def load_prm_data(cfg: PRMConfig) -> tuple[list[StepExample], list[StepExample]]:
    """(train, held-out) trajectories from files or the synthetic generator, as `cfg` says."""
    if cfg.data:
        examples = read_step_data(cfg.data, cfg.data_limit)
    else:
        examples = synthetic_chains(cfg.synthetic, cfg.seed)
    if cfg.eval_data:
        return examples, read_step_data(cfg.eval_data, cfg.data_limit)
    return split_by_problem(examples, cfg.eval_fraction, cfg.seed)


def train_prm(cfg: PRMConfig, *, resume: bool = False, log_fn: Callable[[str], None] = print,
              dist: DistributedConfig | None = None) -> dict[str, Any]:
    """Train a PRM as `cfg` says; writes <output_dir>/model and prm_summary.json. Returns the summary.

    Several ranks (`dist.deepspeed`): each rank trains on its strided share of every step's trajectories; the
    loss divides by the whole step's labelled-step count, so the summed gradient is the single-process one.
    Evals run on every rank (ZeRO-3 gathers the weights for them); rank 0 writes the files.
    """
    from rlvr.models.value_head import load_value_model
    from rlvr.trainers.checkpoint import seed_everything

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    train, held = load_prm_data(cfg)
    if not train:
        raise DataError("data: no training trajectories")
    meta = {"kind": "prm", "step_separator": cfg.step_separator, "max_length": cfg.max_length}
    model, tok = load_value_model(cfg.model, expect_kind="prm", meta=meta)
    model.meta.update(meta)
    model.add_lora(cfg.lora)                           # LoRA: adapters on the trunk, the head fully trained
    enc_train, enc_held = _encode_all(train, tok, cfg), _encode_all(held, tok, cfg)
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
        log_fn(f"prm: resumed from {last.path} (step {step})")
    logger = rank_logger(out, name="prm", total_steps=cfg.max_steps, resume_step=step if last else None,
                           show_keys=["loss/prm", "prm/accuracy", "eval/step_auc"])
    t_start = time.time()
    try:
        while step < cfg.max_steps:
            model.train()
            t0 = time.time()
            idx = batch_indices(len(train), step, cfg.batch_size, cfg.seed)
            n_lab = sum(t is not None for i in idx for t in enc_train[i][2])     # the whole step's count
            mine = shard(idx, ctx)
            loss_sum, hits = 0.0, 0.0
            for s in ctx.micro_batches(len(mine), cfg.micro_batch):   # same count on every rank
                if s.start == s.stop:
                    tr.backward_nothing(one_token_scores)
                    continue
                mb = [enc_train[i] for i in mine[s]]
                with autocast(cfg.bf16):
                    logits = step_logits(tr.compute, [m[0] for m in mb], [m[1] for m in mb], tok.pad_token_id)
                pairs = [_labelled(lg.float(), m[2]) for lg, m in zip(logits, mb)]
                lg, y = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
                # Sum over this micro-batch / labelled steps in the whole step = a global mean over steps.
                loss = F.binary_cross_entropy_with_logits(lg, y, reduction="sum") / max(1, n_lab)
                check_finite(loss, f"prm step {step + 1}: loss")
                tr.backward(loss)
                loss_sum += float(loss.detach())
                hits += float(((lg.detach() >= 0).float() == y).sum())
            gnorm = tr.step()
            sched.step()
            step += 1
            hits = ctx.all_sum(hits)
            n_tok = sum(len(enc_train[i][0]) for i in idx)
            metrics = {"loss/prm": loss_sum, "prm/accuracy": hits / max(1, n_lab), "prm/labelled_steps": n_lab,
                       "grad/norm": gnorm, "lr": sched.get_last_lr()[0],
                       "perf/tokens_per_s": n_tok / max(1e-9, time.time() - t0)}
            metrics = ctx.reduce_metrics(metrics, sum_keys=("loss/prm",))
            if held and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps):
                with tr.gathered():
                    ev = evaluate_prm(model, held, enc_held, tok.pad_token_id, cfg)
                evals.append((step, ev.get("eval/step_auc")))
                metrics.update(ev)
            logger.log(step, metrics)
            if step == cfg.max_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                ckpts.save(step, model, opt, sched, state={"evals": evals}, tokenizer=tok)
    except NonFiniteError as e:
        good = ckpts.latest()
        where = f"last good checkpoint: {good.path}" if good else "no checkpoint was written yet"
        raise NonFiniteError(f"prm: {e}; stopping ({where})") from None
    finally:
        logger.close()
    with tr.gathered():                                 # ZeRO-3: full weights for the save
        if ctx.is_main:
            save_model_dir(model, tok, out / "model")
    final = logger.rows[-1] if logger.rows else {}
    summary = {"steps": step, "train_trajectories": len(train), "eval_trajectories": len(held), "evals": evals,
               **{k: final[k] for k in final if k.startswith("eval/")}, "model": str(out / "model"),
               "wall_s": time.time() - t_start}
    if ctx.is_main:
        atomic_write_json(out / "prm_summary.json", summary)
    ctx.barrier()
    return summary
