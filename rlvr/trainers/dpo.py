"""Offline preference optimisation — DPO, cDPO, IPO, KTO, ORPO, SimPO — in one straight training loop.

The formulas live in `rlvr.algos.preference` (pure per-example functions, hand-tested); this module maps a
batch onto them. Every loss sees the same batch layout: item i = (prompt, first, second), two rows
    paired losses (dpo, cdpo, ipo, orpo, simpo):  first = chosen,        second = rejected
    kto (unpaired):                               first = the completion (labelled desirable or not),
                                                  second = another item's completion under this prompt
                                                  (a mismatched pair for KTO's reference point z0)
and gets log-probs of both rows summed and per-token averaged, plus the reference model's when the loss
needs them. Losses are looked up by name (`register_preference_loss`); the loop never branches on a name.

How this departs from the papers / TRL (each a knob or documented choice):
- reference log-probs are computed once, before training, and cached to disk keyed by a fingerprint of the
  reference weights and the token ids (`precompute_ref`); the reference model is then freed;
- KTO's mismatched completion for item i is item (i+1) mod N's completion (fixed, so it is cacheable), and z0
  is estimated per micro-batch (TRL: per batch, shuffled in-batch pairing);
- IPO takes summed log-probs here (the issue's contract); the paper's code and TRL average per token;
- ORPO's NLL term is the per-token mean NLL of the chosen completion (as the paper);
- `rpo_alpha` adds that same NLL term to any loss (RPO, Pang et al. 2024): with near-identical pairs (two
  answers differing in a digit) plain DPO lowers the chosen log-probs too ("likelihood displacement", Pal et
  al. 2024, arXiv:2402.13228) and a small model's accuracy collapses; the NLL term prevents that.

Data (JSONL, one record per line; `prompt` is a string or a list of chat messages {role, content}):
    {"prompt": ..., "chosen": str | [messages], "rejected": str | [messages]}          pairs
    {"prompt": ..., "completion": str | [messages], "label": true | false}             unpaired (KTO)
Pairs can feed KTO (chosen -> desirable, rejected -> undesirable); unpaired data cannot feed paired losses.
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import field_validator, model_validator

from rlvr.algos import (dpo_loss, implicit_rewards, ipo_loss, kto_loss, kto_reference_point, log_odds, orpo_loss,
                        simpo_loss)
from rlvr.algos.registry import Registry
from rlvr.distributed import DistributedConfig, context, prepare, shard
from rlvr.distributed.trainable import as_trainable
from rlvr.errors import ConfigError, DataError
from rlvr.distributed.bf16_params import cast_params, check_bf16_params
from rlvr.models.shared_prompt import ShareSetting, share_prompts_on
from rlvr.trainers.checkpoint import atomic_write_json
from rlvr.trainers.common import (NonFiniteError, autocast, build_optimizer, build_scheduler, check_finite,
                                  completion_logprobs, micro_batches, pack)
from rlvr.trainers.config_fields import CheckpointFields, MasterWeightsFields, OptimFields
from rlvr.trainers.logger import rank_logger
from rlvr.trainers.sft import batch_indices

__all__ = ["DPOConfig", "PrefItem", "SeqStats", "PreferenceLoss", "PREFERENCE_LOSSES", "register_preference_loss",
           "get_preference_loss", "read_preference_records", "encode_records", "pairs_to_unpaired",
           "sequence_logps", "reference_logps", "train_dpo"]


class DPOConfig(OptimFields, MasterWeightsFields, CheckpointFields):
    lr: float = 5e-6
    """peak learning rate (AdamW)"""
    checkpoint_every: int = 50
    """steps between checkpoints (0: only at the end)"""
    loss: str = "dpo"
    """preference loss name: dpo | cdpo | ipo | kto | orpo | simpo (register_preference_loss adds more)"""
    beta: float = 0.1
    """β of DPO/cDPO/KTO/SimPO; τ of IPO (target margin 1/(2τ))"""
    label_smoothing: float = 0.0
    """cDPO ε: probability that a pair's label is flipped (dpo: 0; cdpo needs > 0)"""
    simpo_gamma: float = 0.5
    """SimPO target margin γ"""
    orpo_lambda: float = 0.1
    """ORPO weight λ of the odds-ratio term"""
    rpo_alpha: float = 0.0
    """weight α of an NLL term on chosen / desirable completions (per-token mean), added to any loss:
    RPO (Pang et al. 2024, arXiv:2404.19733); keeps DPO from lowering the chosen log-probs on reasoning tasks"""
    kto_desirable_weight: float = 1.0
    """KTO λ_D"""
    kto_undesirable_weight: float = 1.0
    """KTO λ_U"""
    steps: int = 100
    """optimizer steps"""
    batch_size: int = 32
    """items (pairs, or labelled completions for KTO) per optimizer step"""
    micro_batch: int = 32
    """items per forward/backward (gradient accumulation inside one step)"""
    share_prompt_forward: ShareSetting = "auto"
    """an item's two rows (chosen/rejected) run their prompt once and share its KV cache
    (rlvr.models.shared_prompt): the same log-probs up to float order, one prompt pass per pair instead of two;
    "auto": on the CPU only (share_prompts_on)"""
    max_length: int = 512
    """prompt + completion tokens; the prompt loses its beginning first"""
    precompute_ref: bool = True
    """compute reference log-probs once before training (and free the reference model)"""
    ref_cache: str | None = "ref_logps.pt"
    """file for the precomputed reference log-probs, relative to the run dir (None: keep them in memory)"""
    eval_every: int = 0
    """steps between held-out evaluations (0: only at the end)"""

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        if v not in PREFERENCE_LOSSES:
            raise ValueError(f"unknown preference loss {v!r}; known: {', '.join(PREFERENCE_LOSSES.names())}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "DPOConfig":
        spec = get_preference_loss(self.loss)
        if spec.check is not None and (msg := spec.check(self)):
            raise ValueError(msg)
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.beta <= 0 or self.batch_size < 1 or self.micro_batch < 1 or self.steps < 0:
            raise ValueError("need beta > 0, batch_size >= 1, micro_batch >= 1, steps >= 0")
        return self


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class PrefItem:
    """One training item as token ids: a prompt and two completions (see the module doc for their roles)."""

    prompt: tuple[int, ...]
    first: tuple[int, ...]
    second: tuple[int, ...]
    desirable: bool = True        # KTO label of `first`; paired items: always True


def _render_prompt(prompt: Any, tokenizer: Any, where: str) -> str:
    if isinstance(prompt, str):
        return prompt
    if not (isinstance(prompt, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt)):
        raise DataError(f"{where}: 'prompt' must be a string or a list of {{role, content}} messages")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    # No chat template (e.g. the tiny model): a plain, documented layout.
    return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: "


def _render_completion(value: Any, where: str, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return "".join(str(m["content"]) for m in value)        # the assistant turn(s), concatenated
    raise DataError(f"{where}: '{key}' must be a string or a non-empty list of messages")


def read_preference_records(path: str | Path, limit: int | None = None) -> list[tuple[str, dict]]:
    """(where, record) of a JSONL/JSONL.gz preference file; each record is checked to be pairs or unpaired."""
    from rlvr.trainers.reward_model import read_jsonl_any

    out = []
    for lineno, rec in read_jsonl_any(path, limit):
        where = f"{path}:{lineno}"
        paired, unpaired = {"chosen", "rejected"} <= set(rec), {"completion", "label"} <= set(rec)
        if "prompt" not in rec or paired == unpaired:
            raise DataError(f"{where}: needs 'prompt' and either 'chosen'+'rejected' or 'completion'+'label' "
                            f"(keys: {', '.join(sorted(rec))})")
        if unpaired and not isinstance(rec["label"], bool):
            raise DataError(f"{where}: 'label' must be true or false, got {rec['label']!r}")
        out.append((where, rec))
    return out


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fit(prompt: list[int], completions: Sequence[list[int]], max_length: int) -> tuple[tuple, list[tuple]]:
    """Cut completions to max_length - 1 and the prompt from the left so prompt + longest fits."""
    comps = [tuple(c[:max(1, max_length - 1)]) for c in completions]
    room = max(1, max_length - max(len(c) for c in comps))
    return tuple(prompt[-room:]), comps


def encode_records(records: Sequence[tuple[str, dict]], tokenizer: Any, max_length: int,
                   paired: bool) -> list[PrefItem]:
    """Records -> PrefItems (completions end with EOS). paired=False gives KTO items (pairs are split into a
    desirable and an undesirable item; the mismatched second row is item (i+1) mod N's completion)."""
    eos = [tokenizer.eos_token_id]
    items: list[PrefItem] = []
    labelled: list[tuple[tuple, tuple, bool]] = []
    for where, rec in records:
        prompt = _ids(tokenizer, _render_prompt(rec["prompt"], tokenizer, where))
        if "chosen" in rec:
            c = _ids(tokenizer, _render_completion(rec["chosen"], where, "chosen")) + eos
            r = _ids(tokenizer, _render_completion(rec["rejected"], where, "rejected")) + eos
            p, (c, r) = _fit(prompt, [c, r], max_length)
            items.append(PrefItem(p, c, r))
            labelled += [(p, c, True), (p, r, False)]
        else:
            if paired:
                raise DataError(f"{where}: unpaired record (completion + label) but the loss needs "
                                f"chosen/rejected pairs; use loss=kto")
            y = _ids(tokenizer, _render_completion(rec["completion"], where, "completion")) + eos
            p, (y,) = _fit(prompt, [y], max_length)
            labelled.append((p, y, rec["label"]))
    return items if paired else pairs_to_unpaired(labelled)


def pairs_to_unpaired(labelled: Sequence[tuple[Sequence[int], Sequence[int], bool]]) -> list[PrefItem]:
    """(prompt, completion, desirable) triples -> KTO items; item i's second row is completion (i+1) mod N."""
    n = len(labelled)
    return [PrefItem(tuple(p), tuple(y), tuple(labelled[(i + 1) % n][1]), bool(d))
            for i, (p, y, d) in enumerate(labelled)]


# ------------------------------------------------------------------------------------------- log-probs
@dataclass
class SeqStats:
    """Per-item numbers a preference loss consumes; every tensor is [B, 2] (column 0 = first, 1 = second)."""

    logps: torch.Tensor               # summed completion log-probs under the policy (with grad)
    avg_logps: torch.Tensor           # logps / number of completion tokens
    ref_logps: torch.Tensor | None    # summed log-probs under the reference (None for reference-free losses)
    desirable: torch.Tensor           # [B] bool, KTO labels
    z0: torch.Tensor | None = None    # KTO reference point of the whole optimizer step (all micro-batches, ranks)


def _rows(items: Sequence[PrefItem], pad_id: int):
    """[first_0..first_{B-1}, second_0..second_{B-1}] as one PackedBatch [2B, P + C]."""
    prompts = [list(it.prompt) for it in items] * 2
    comps = [list(it.first) for it in items] + [list(it.second) for it in items]
    return pack(prompts, comps, pad_id)


def sequence_logps(model: torch.nn.Module, items: Sequence[PrefItem], pad_id: int,
                   bf16: bool = False, share_prompts: ShareSetting = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and per-token-averaged completion log-probs: items [B] -> (logps [B, 2], avg_logps [B, 2]).
    share_prompts: an item's two rows run its prompt once (rlvr.models.shared_prompt)."""
    batch = _rows(items, pad_id)
    with autocast(bf16):
        logp, _ = completion_logprobs(model, batch, share_prompts=share_prompts)   # [2B, C], 0 off the mask
    total = logp.sum(-1)
    n_tok = batch.completion_mask.sum(-1).clamp(min=1).to(total.device)
    B = len(items)
    return total.view(2, B).T, (total / n_tok).view(2, B).T


@torch.no_grad()
def reference_logps(model: torch.nn.Module, items: Sequence[PrefItem], pad_id: int, micro_batch: int,
                    bf16: bool = False, share_prompts: ShareSetting = False) -> torch.Tensor:
    """Summed log-probs of every item's two rows under `model` (eval mode): [N, 2] float32."""
    was = model.training
    model.eval()
    try:
        parts = [sequence_logps(model, items[s], pad_id, bf16, share_prompts)[0]
                 for s in micro_batches(len(items), micro_batch)]
    finally:
        model.train(was)
    return torch.cat(parts).float().cpu()   # kept (and cached on disk) on the CPU; steps move their rows


def _fingerprint(model: torch.nn.Module, items: Sequence[PrefItem], bf16: bool,
                 share: ShareSetting = False) -> str:
    """sha256 over the reference weights, the token ids, the precision and the prompt sharing (which changes the
    float summation order): a cache hit means the same numbers."""
    shared = share_prompts_on(model, share)
    h = hashlib.sha256(f"bf16={bf16};n={len(items)}{';shared' if shared else ''}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    for it in items:
        h.update(repr((it.prompt, it.first, it.second, it.desirable)).encode())
    return h.hexdigest()


def cached_reference_logps(ref_model: torch.nn.Module, items: Sequence[PrefItem], pad_id: int, cfg: DPOConfig,
                           cache: Path | None, log_fn: Callable[[str], None] = print) -> torch.Tensor:
    """`reference_logps`, read from `cache` when its fingerprint matches, else computed and written atomically."""
    key = _fingerprint(ref_model, items, cfg.bf16, cfg.share_prompt_forward) if cache is not None else None
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("fingerprint") == key:
            log_fn(f"reference log-probs: cache hit {cache}")
            return saved["logps"]
    logps = reference_logps(ref_model, items, pad_id, cfg.micro_batch, cfg.bf16, cfg.share_prompt_forward)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        os.close(fd)
        torch.save({"fingerprint": key, "logps": logps}, tmp)
        os.replace(tmp, cache)
    return logps


# ------------------------------------------------------------------------------------------------ losses
@dataclass(frozen=True)
class PreferenceLoss:
    """How one preference loss consumes a batch: `fn(stats, cfg) -> (loss [B], metrics)`."""

    fn: Callable[[SeqStats, DPOConfig], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    needs_reference: bool
    paired: bool
    check: Callable[[DPOConfig], str | None] | None = None     # cross-field config check, message on failure


PREFERENCE_LOSSES = Registry("preference loss")


def register_preference_loss(name: str, *, needs_reference: bool, paired: bool = True,
                             check: Callable[[DPOConfig], str | None] | None = None):
    """Decorator registering `fn(stats, cfg) -> (loss [B], metrics)` as preference loss `name`."""
    def deco(fn):
        PREFERENCE_LOSSES.register(name)(PreferenceLoss(fn, needs_reference, paired, check))
        return fn
    return deco


def get_preference_loss(name: str) -> PreferenceLoss:
    return PREFERENCE_LOSSES.get(name)


def pair_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies from per-pair rewards [B]."""
    r_chosen, r_rejected = r_chosen.detach(), r_rejected.detach()
    return {"rewards/chosen": r_chosen.mean(), "rewards/rejected": r_rejected.mean(),
            "rewards/margins": (r_chosen - r_rejected).mean(),
            "rewards/accuracies": (r_chosen > r_rejected).float().mean()}


def _implicit(s: SeqStats, beta: float) -> dict[str, torch.Tensor]:
    return pair_metrics(implicit_rewards(s.logps[:, 0], s.ref_logps[:, 0], beta),
                        implicit_rewards(s.logps[:, 1], s.ref_logps[:, 1], beta))


def _sigmoid_dpo(s: SeqStats, cfg: DPOConfig):
    loss = dpo_loss(s.logps[:, 0], s.logps[:, 1], s.ref_logps[:, 0], s.ref_logps[:, 1], cfg.beta,
                    label_smoothing=cfg.label_smoothing)
    return loss, _implicit(s, cfg.beta)


register_preference_loss("dpo", needs_reference=True)(_sigmoid_dpo)
register_preference_loss(
    "cdpo", needs_reference=True,
    check=lambda c: None if c.label_smoothing > 0 else "loss cdpo needs label_smoothing > 0 (the flip rate ε)",
)(_sigmoid_dpo)


@register_preference_loss("ipo", needs_reference=True)
def _ipo(s: SeqStats, cfg: DPOConfig):
    loss = ipo_loss(s.logps[:, 0], s.logps[:, 1], s.ref_logps[:, 0], s.ref_logps[:, 1], tau=cfg.beta)
    return loss, _implicit(s, cfg.beta)


@register_preference_loss("simpo", needs_reference=False)
def _simpo(s: SeqStats, cfg: DPOConfig):
    loss = simpo_loss(s.avg_logps[:, 0], s.avg_logps[:, 1], cfg.beta, cfg.simpo_gamma)
    return loss, pair_metrics(cfg.beta * s.avg_logps[:, 0], cfg.beta * s.avg_logps[:, 1])


@register_preference_loss("orpo", needs_reference=False)
def _orpo(s: SeqStats, cfg: DPOConfig):
    nll = -s.avg_logps[:, 0]
    loss = orpo_loss(s.avg_logps[:, 0], s.avg_logps[:, 1], nll, cfg.orpo_lambda)
    m = pair_metrics(log_odds(s.avg_logps[:, 0].detach()), log_odds(s.avg_logps[:, 1].detach()))
    m["loss/nll"] = nll.detach().mean()
    return loss, m


@register_preference_loss("kto", needs_reference=True, paired=False)
def _kto(s: SeqStats, cfg: DPOConfig):
    z0 = s.z0 if s.z0 is not None else kto_reference_point(s.logps[:, 1], s.ref_logps[:, 1])
    loss = kto_loss(s.logps[:, 0], s.ref_logps[:, 0], s.desirable, z0, cfg.beta,
                    cfg.kto_desirable_weight, cfg.kto_undesirable_weight)
    r = implicit_rewards(s.logps[:, 0], s.ref_logps[:, 0], cfg.beta)
    d = s.desirable.bool()
    nan = r.new_tensor(float("nan"))
    return loss, {"kto/z0": z0, "rewards/chosen": r[d].mean() if d.any() else nan,
                  "rewards/rejected": r[~d].mean() if (~d).any() else nan}


# ------------------------------------------------------------------------------------------------ training
def _step(model, items, idx, ref_batch, spec, cfg, pad_id, tr=None, n_total: int | None = None
          ) -> dict[str, float]:
    """One optimizer step's forward/backward passes over items `idx` (reference log-probs `ref_batch`
    [len(idx), 2] or None); returns metrics averaged over micro-batches. With several ranks `idx` is this rank's
    share and `n_total` the whole step's item count (the loss is a mean over all of them)."""
    tr, ctx = as_trainable(tr, model, cfg.grad_clip), context()
    model = tr.compute           # the training passes' module (a bf16 twin with bf16_params)
    n_total = n_total or len(idx)
    sums: dict[str, float] = {}
    z0 = _step_reference_point(model, items, idx, ref_batch, cfg, pad_id) if spec.fn is _kto else None
    for s in ctx.micro_batches(len(idx), cfg.micro_batch):
        if s.start == s.stop:
            tr.backward_nothing()
            continue
        sub = idx[s]
        frac = len(sub) / len(idx)
        logps, avg = sequence_logps(model, [items[i] for i in sub], pad_id, cfg.bf16, cfg.share_prompt_forward)
        ref = ref_batch[s].to(logps.device) if ref_batch is not None else None
        desirable = torch.tensor([items[i].desirable for i in sub], device=logps.device)
        loss_vec, m = spec.fn(SeqStats(logps, avg, ref, desirable, z0), cfg)
        if cfg.rpo_alpha:
            nll = -avg[:, 0] * desirable                              # first row, where it is a good completion
            loss_vec = loss_vec + cfg.rpo_alpha * nll
            m = {**m, "loss/rpo_nll": nll.detach().sum() / desirable.sum().clamp(min=1)}
        loss = loss_vec.sum() / n_total                             # mean over the whole step's items
        check_finite(loss, "preference loss")
        tr.backward(loss)
        m = {**m, "loss/total": loss_vec.detach().mean(), "logps/chosen": logps[:, 0].detach().mean(),
             "logps/rejected": logps[:, 1].detach().mean()}
        if ref is not None:   # how far the policy has moved from the reference, per sequence
            m["logps/drift"] = (logps.detach() - ref).mean()
        for k, v in m.items():
            v = float(v)
            if v == v:        # NaN = "no such items in this micro-batch" (KTO): skip, do not poison the mean
                sums[k] = sums.get(k, 0.0) + v * frac
    return sums


@torch.no_grad()
def _step_reference_point(model, items, idx, ref_batch, cfg, pad_id) -> torch.Tensor:
    """KTO's z0 over the whole optimizer step, not per micro-batch (KTO estimates it on the batch): the
    mismatched completions' policy − reference log-prob gap, summed over this rank's items, averaged over all
    ranks' items, clamped at 0 — `kto_reference_point` on the full step."""
    ctx = context()
    gap, n = 0.0, 0
    for s in micro_batches(len(idx), cfg.micro_batch):
        logps, _ = sequence_logps(model, [items[i] for i in idx[s]], pad_id, cfg.bf16, cfg.share_prompt_forward)
        ref = ref_batch[s].to(logps.device) if ref_batch is not None else logps
        gap += float((logps[:, 1] - ref[:, 1]).sum())
        n += logps.shape[0]
    return torch.tensor(ctx.all_sum(gap) / max(1, ctx.all_sum(n))).clamp(min=0)


def _reference(model, ref_model, items, pad_id: int, spec: PreferenceLoss, cfg: DPOConfig, out_dir: Path,
               log_fn) -> tuple[torch.Tensor | None, torch.nn.Module | None]:
    """(reference log-probs [N, 2] computed now, or None; a frozen reference model to score batches, or None).
    The reference is `ref_model`, else `model` as it is now: scored right away when precomputing (no copy),
    else a frozen copy. With bf16_params it is always a copy with bf16 parameters (the policy's numerics)."""
    if not spec.needs_reference:
        return None, None
    cache = out_dir / cfg.ref_cache if cfg.ref_cache else None
    if ref_model is None and cfg.precompute_ref and not cfg.bf16_params:   # scored now: the model itself, no copy
        return cached_reference_logps(model, items, pad_id, cfg, cache, log_fn), None
    ref = ref_model if ref_model is not None else model
    if ref_model is None or cfg.bf16_params:   # the policy itself, or a module about to be cast: a copy
        ref = copy.deepcopy(ref)
    ref = ref.eval().requires_grad_(False)
    if cfg.bf16_params:    # scored with the policy's numerics, so the implicit rewards start at exactly 0
        cast_params(ref)
    if not cfg.precompute_ref:
        return None, ref
    return cached_reference_logps(ref, items, pad_id, cfg, cache, log_fn), None


def train_dpo(model: torch.nn.Module, tokenizer: Any, items: Sequence[PrefItem], cfg: DPOConfig, *, out_dir,
              seed: int = 0, ref_model: torch.nn.Module | None = None,
              evaluate: Callable[[torch.nn.Module], float] | None = None, resume: bool = False,
              name: str = "dpo", log_fn: Callable[[str], None] = print,
              dist: DistributedConfig | None = None) -> dict[str, Any]:
    """Train `model` on `items` with `cfg.loss`. The reference is `ref_model`, else `model` as passed in
    (before any checkpoint is restored), so a resumed run uses the same reference as the original one.
    Several ranks: each trains on its strided share of every batch."""
    if not items:
        raise DataError(f"{name}: no preference items to train on")
    spec = get_preference_loss(cfg.loss)
    if any(not it.desirable for it in items) and spec.paired:
        raise ConfigError(f"{name}: loss {cfg.loss!r} needs chosen/rejected pairs, got KTO-style items")
    out_dir = Path(out_dir)
    pad_id = tokenizer.pad_token_id
    if cfg.bf16_params:
        check_bf16_params(model)
    ref_all, ref_live = _reference(model, ref_model, items, pad_id, spec, cfg, out_dir, log_fn)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=cfg.fused_adamw)
    sched = build_scheduler(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, kind=cfg.schedule)
    tr, ctx = prepare(model, opt, dist, grad_clip=cfg.grad_clip, bf16=cfg.bf16, bf16_params=cfg.bf16_params), \
        context()
    ckpts = tr.checkpoints(out_dir, keep_last=cfg.keep_last)
    step, evals = 0, []
    last = ckpts.latest() if resume else None
    if last is not None:
        ckpts.restore(last, model, opt, sched)
        step, evals = last.state["step"], last.state.get("evals", [])
        log_fn(f"{name}: resumed from {last.path} (step {step})")
    logger = rank_logger(out_dir, name=name, total_steps=cfg.steps, resume_step=step if last else None,
                           show_keys=["loss/total", "rewards/accuracies", "eval/pass@1"])
    t_start = time.time()
    try:
        while step < cfg.steps:
            t0 = time.time()
            model.train()
            all_idx = batch_indices(len(items), step, cfg.batch_size, seed)
            idx = torch.tensor(shard(all_idx, ctx), dtype=torch.long)
            ref_batch = ref_all[idx] if ref_all is not None else None
            if ref_live is not None:
                ref_batch = reference_logps(ref_live, [items[i] for i in idx], pad_id, cfg.micro_batch, cfg.bf16,
                                            cfg.share_prompt_forward)
            metrics = _step(model, items, idx, ref_batch, spec, cfg, pad_id, tr=tr, n_total=len(all_idx))
            metrics["grad/norm"] = tr.step()
            sched.step()
            step += 1
            metrics["lr"] = sched.get_last_lr()[0]
            metrics["time/step_s"] = time.time() - t0
            metrics = ctx.reduce_metrics(metrics)    # every metric here is a per-item mean: averaged over ranks
            if evaluate is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                with tr.gathered():   # ZeRO-3: full weights, no collectives inside the eval's generation
                    score = ctx.broadcast_object(float(evaluate(model)))
                evals.append((step, score))
                metrics["eval/pass@1"] = score
            logger.log(step, metrics)
            if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                ckpts.save(step, model, opt, sched, state={"evals": evals})
    except NonFiniteError as e:
        good = ckpts.latest()
        where = f"last good checkpoint: {good.path}" if good else "no checkpoint was written yet"
        raise NonFiniteError(f"{name} step {step + 1}: {e}; stopping ({where})") from None
    finally:
        logger.close()
    summary = {"steps": step, "items": len(items), "loss": cfg.loss, "evals": evals,
               "final_pass@1": evals[-1][1] if evals else None, "wall_s": time.time() - t_start}
    if ctx.is_main:
        atomic_write_json(out_dir / f"{name}_summary.json", summary)
    return summary
