"""bf16 parameters with an fp32 master copy (Megatron-style mixed precision) for plain single-process training.

Under bf16 autocast the model keeps fp32 weights: every linear casts its weight to bf16 in the forward, the
residual stream stays fp32 (an fp32 embedding plus bf16 outputs is fp32), and the backward casts each bf16
weight gradient back to fp32. Here the forward and backward run on a bf16 twin of the model instead, and the
fp32 model stays the one the optimizer steps, checkpoints save, evals and weight syncs read:

    forward/backward on `compute` (bf16) -> each bf16 gradient is added into the fp32 parameter's .grad as it
    is produced (post-accumulate hook: the micro-batches of a step accumulate in fp32) -> clip + optimizer
    step on the fp32 model -> the twin copies the new fp32 weights (one cast per step).

Numerics: the same bf16 matmuls as autocast; the residual stream, norms' inputs and activations are bf16 (as in
the bf16 sampler copy, vLLM, and verl's FSDP `param_dtype: bf16`), not fp32; buffers such as rotary tables stay
fp32. On SmolLM2-135M the trained log-probs moved 0.026 nats (mean |diff| over sampled tokens) from autocast's,
and their distance to the bf16 sampler's stayed the same (0.034 either way). The optimizer, its state and the
weights it updates stay fp32, so updates smaller than bf16's resolution are kept.

Measured (benchmarks/grpo_step.py --compare-bf16-params, SmolLM2-135M, 2 threads, alternating): policy
forward+backward 10.67 -> 8.93 s, reference 2.52 -> 2.36 s, step 23.18 -> 20.66 s (docs/performance.md).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch

from rlvr.distributed.trainable import PlainTrainable
from rlvr.errors import ConfigError
from rlvr.trainers.checkpoint import CheckpointManager

__all__ = ["BF16ParamsTrainable", "cast_params", "check_bf16_params"]


def check_bf16_params(model: Any) -> None:
    """Raise ConfigError unless `model` can train with bf16 parameters: a plain fp32 module (no LoRA)."""
    if not isinstance(model, torch.nn.Module) or hasattr(model, "peft_config"):
        raise ConfigError("bf16_params: needs a plain (non-LoRA) model; LoRA adapters train in fp32 already")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ConfigError("bf16_params: the model must be loaded in float32 (the fp32 master weights)")


def cast_params(module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """`module` with its parameters (not its buffers: rotary inv_freq tables stay fp32, as under autocast) in
    `dtype`, in place; tied parameters stay tied."""
    for p in module.parameters():
        p.data = p.data.to(dtype)
    return module


def _into_master(master: torch.nn.Parameter, param: torch.Tensor) -> None:
    """post-accumulate-grad hook of a twin parameter: move its bf16 gradient into the master's fp32 .grad."""
    g = param.grad.float()
    if master.grad is None:
        master.grad = g
    else:
        master.grad.add_(g)
    param.grad = None


class BF16ParamsTrainable(PlainTrainable):
    """PlainTrainable whose forward/backward passes run on `compute`, a bf16 twin of the fp32 `module`."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, grad_clip: float | None):
        check_bf16_params(model)
        super().__init__(model, optimizer, grad_clip)
        self._twin: torch.nn.Module | None = None

    @property
    def compute(self) -> torch.nn.Module:
        """The bf16 twin, built on first use (after a resume has restored the fp32 weights), in the fp32 model's
        train/eval mode."""
        if self._twin is None:
            self._twin = cast_params(copy.deepcopy(self.module))
            masters = dict(self.module.named_parameters())
            for name, p in self._twin.named_parameters():
                p.grad = None
                if masters[name].requires_grad:
                    p.register_post_accumulate_grad_hook(functools.partial(_into_master, masters[name]))
                else:
                    p.requires_grad_(False)
        if self._twin.training != self.module.training:
            self._twin.train(self.module.training)
        return self._twin

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the fp32 weights into the twin (after the optimizer step, or after anything else changed them)."""
        if self._twin is None:
            return
        masters = dict(self.module.named_parameters())
        for name, p in self._twin.named_parameters():
            p.copy_(masters[name])

    def step(self) -> float:
        norm = super().step()
        self.refresh()
        return norm

    def checkpoints(self, out_dir: str | Path, keep_last: int) -> CheckpointManager:
        return _RefreshingCheckpoints(out_dir, keep_last=keep_last, trainable=self)


class _RefreshingCheckpoints(CheckpointManager):
    """Checkpoints whose restore also refreshes the twin: the restored fp32 weights are the master copy."""

    def __init__(self, run_dir: str | Path, keep_last: int, trainable: BF16ParamsTrainable):
        super().__init__(run_dir, keep_last=keep_last)
        self.trainable = trainable

    def restore(self, *args: Any, **kwargs: Any) -> None:
        super().restore(*args, **kwargs)
        self.trainable.refresh()
