"""Config fields that several trainers share, declared once. A trainer's config inherits the groups it uses and
re-declares a field only to give it another default (pydantic keeps the subclass's)."""
from __future__ import annotations

from pydantic import model_validator

from rlvr.config import Config

__all__ = ["OptimFields", "MasterWeightsFields", "CheckpointFields", "SamplingFields"]


class OptimFields(Config):
    lr: float = 1e-6
    """peak learning rate (AdamW)"""
    weight_decay: float = 0.0
    """decoupled weight decay on matrices"""
    warmup_steps: int = 0
    """linear warm-up steps"""
    schedule: str = "constant"
    """constant | linear | cosine"""
    grad_clip: float | None = 1.0
    """max global grad norm (None: no clipping)"""
    bf16: bool = True
    """bf16 autocast with fp32 master weights"""
    fused_adamw: bool = False
    """AdamW's fused kernel (CPU/CUDA): SmolLM2-135M on 2 CPU threads 0.97 -> 0.19 s per step, equal to the default
    foreach to 1e-8 per step, yet a different run after a few hundred bf16 steps (off: the demos were tuned on
    foreach runs)"""


class MasterWeightsFields(Config):
    """For the trainers whose training passes run on `Trainable.compute`: GRPO, PPO, SFT, the DPO family, reward
    models and PRMs."""
    bf16_params: bool = False
    """the training passes run on a bf16 copy of the model (bf16 residual stream, no per-pass weight casts) and
    the gradients accumulate into the fp32 weights the optimizer steps (rlvr.distributed.bf16_params); GRPO also
    keeps its KL reference in bf16 and DPO scores its reference in bf16, so the KL and the implicit rewards start
    at exactly 0. Needs bf16; not with DeepSpeed, LoRA or gradient checkpointing"""

    @model_validator(mode="after")
    def _bf16_params_needs_bf16(self):
        if self.bf16_params and not getattr(self, "bf16", False):
            raise ValueError("bf16_params runs the model in bf16: it needs bf16: true")
        return self


class CheckpointFields(Config):
    checkpoint_every: int = 100
    """steps between checkpoints (0: only at the end)"""
    keep_last: int = 2
    """checkpoints kept"""


class SamplingFields(Config):
    temperature: float = 1.0
    """sampling temperature (log-probs are computed at the same temperature)"""
    top_p: float = 1.0
    """nucleus sampling"""
    max_new_tokens: int = 64
    """completion budget; hitting it marks the completion truncated"""
