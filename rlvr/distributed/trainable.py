"""One seam between every trainer and how its model is optimised: plain PyTorch, or DeepSpeed ZeRO.

A trainer builds its model and torch optimizer as before, then

    tr = prepare(model, opt, dist_cfg, grad_clip=cfg.grad_clip)
    ...  loss = <this rank's share of the global loss>;  tr.backward(loss)      # per micro-batch
    gnorm = tr.step()                                   # clip, optimizer step, zero grads; pre-clip norm
    ckpts = tr.checkpoints(out_dir, keep_last)          # same save/restore/latest interface either way
    with tr.gathered(): generate / evaluate / sync weights   # ZeRO-3: full weights, local forwards only

and keeps calling `model(...)` for forward passes (DeepSpeed's engine wraps the same module object, so the
rollout engine that shares the module keeps working). Learning-rate schedules stay on the torch optimizer.

DeepSpeed specifics handled here, not in trainers:
- the JSON config is completed from the trainer's settings: gradient_accumulation_steps = 1 with
  `managed_gradient_accumulation: false` (we own accumulation: any number of backward calls, then `step()`),
  gradient_clipping = grad_clip, a nominal micro-batch size (we never use DeepSpeed's data loader);
- DeepSpeed averages gradients over ranks; trainers' losses are shares of the global loss, so `backward`
  multiplies by world_size and the ranks' gradients *sum* to the single-process gradient;
- ZeRO-2/3 reduce gradients inside each backward: every rank must call backward equally often per step
  (`DistContext.micro_batches` gives equal counts; `backward_nothing` fills a rank that has no rows);
- ZeRO-3 also makes every forward a collective: passes whose count differs per rank (generation, evals, no-grad
  scoring of a rank's own rows) run inside `gathered()` (rlvr/distributed/zero3.py); before each backward we
  tell the ZeRO optimizer a new micro-step began, as `engine.forward` would (that is what makes ZeRO-3
  accumulate, not overwrite, the gradients of a step's earlier backward passes);
- under DeepSpeed the gradient norm is checked after the step (it is only known there); a non-finite norm still
  stops the run before the next checkpoint, so the last checkpoint on disk stays good.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import torch

from rlvr.distributed.config import DistributedConfig, read_deepspeed_config
from rlvr.distributed.context import DistContext, context
from rlvr.distributed.zero3 import clear_backward_seen, full_weights
from rlvr.errors import ConfigError
from rlvr.trainers.checkpoint import CheckpointManager
from rlvr.trainers.common import check_finite, clip_and_check, module_device

__all__ = ["Trainable", "PlainTrainable", "DeepSpeedTrainable", "prepare", "as_trainable", "complete_deepspeed_config"]


class Trainable:
    """Backward / step / checkpoints for one model + optimizer (see module docstring)."""

    module: torch.nn.Module
    optimizer: Any
    ctx: DistContext

    def backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self) -> float:
        raise NotImplementedError

    def checkpoints(self, out_dir: str | Path, keep_last: int) -> CheckpointManager:
        raise NotImplementedError

    @property
    def compute(self) -> torch.nn.Module:
        """The module the training passes run (forward + backward); `module` itself, except with bf16 parameters
        (rlvr.distributed.bf16_params), where it is a bf16 twin whose gradients land in `module`."""
        return self.module

    def gathered(self) -> contextlib.AbstractContextManager:
        """Context for forward passes that differ per rank (generation, evals, weight sync, no-grad scoring of
        this rank's rows): full weights and no collectives. A no-op unless the parameters are partitioned (ZeRO-3);
        every rank must enter it together."""
        return contextlib.nullcontext()

    def backward_nothing(self, forward_fn=None) -> None:
        """A zero-loss backward for a rank with no rows in this micro-batch slot (keeps ZeRO's per-backward
        collectives in step). `forward_fn(module)` -> any tensor output; default: the LM on one token."""
        out = forward_fn(self.module) if forward_fn is not None else \
            self.module(input_ids=torch.zeros(1, 1, dtype=torch.long, device=module_device(self.module))).logits
        self.backward(out.float().sum() * 0.0)


class PlainTrainable(Trainable):
    """Single process, no DeepSpeed: exactly the loop every trainer had (backward, clip, step, zero_grad)."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, grad_clip: float | None):
        self.module, self.optimizer, self.grad_clip, self.ctx = model, optimizer, grad_clip, context()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        norm = clip_and_check(self.module, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def checkpoints(self, out_dir: str | Path, keep_last: int) -> CheckpointManager:
        return CheckpointManager(out_dir, keep_last=keep_last)


class DeepSpeedTrainable(Trainable):
    """The model and optimizer wrapped by `deepspeed.initialize` (ZeRO stage from the JSON config)."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, ds_config: dict[str, Any]):
        import deepspeed

        self.ctx = context()
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.module = self.engine.module
        self.zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))

    def backward(self, loss: torch.Tensor) -> None:
        # engine.forward would have done this (we call the module directly): without it ZeRO-3 overwrites, rather
        # than accumulates, the gradient partitions of a step's earlier backward passes (rlvr/distributed/zero3.py).
        clear_backward_seen(self.engine)
        # DeepSpeed divides the summed gradients by world_size; the loss is already a share of the global mean.
        self.engine.backward(loss * self.ctx.world_size)

    def gathered(self) -> contextlib.AbstractContextManager:
        return full_weights(self.engine) if self.zero_stage == 3 else contextlib.nullcontext()

    def step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else 0.0
        check_finite(norm, "gradient norm")
        return norm

    def checkpoints(self, out_dir: str | Path, keep_last: int) -> CheckpointManager:
        from rlvr.distributed.checkpoint import DeepSpeedCheckpointManager
        return DeepSpeedCheckpointManager(out_dir, keep_last=keep_last, trainable=self)


def complete_deepspeed_config(ds: dict[str, Any], *, grad_clip: float | None, bf16: bool) -> dict[str, Any]:
    """The user's DeepSpeed JSON with the fields we own filled in ("auto" values resolved).

    We own gradient accumulation (`managed_gradient_accumulation: false`, GAS 1), clipping (`grad_clip`), and the
    batch size fields DeepSpeed's data loader would use (nominal 1; never used). `bf16.enabled: "auto"` is the
    trainer's bf16 flag on CUDA (bf16 weights, fp32 master copy in the optimizer) and off on CPU, where bf16
    autocast over fp32 weights is the fast path.
    """
    ds = copy.deepcopy(ds)
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        if key in ds and ds[key] != "auto":
            raise ConfigError(f"distributed.deepspeed: {key!r} is set by the trainer; use \"auto\" or leave it out")
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = 1
    ds.pop("train_batch_size", None)
    ds["gradient_clipping"] = float(grad_clip) if grad_clip else 0.0
    ds["managed_gradient_accumulation"] = False
    ds.setdefault("zero_allow_untested_optimizer", True)
    ds.setdefault("steps_per_print", 10**9)   # our MetricsLogger reports progress
    if "optimizer" in ds or "scheduler" in ds:
        raise ConfigError("distributed.deepspeed: 'optimizer'/'scheduler' come from the trainer config; remove them")
    for key in ("bf16", "fp16"):
        if ds.get(key, {}).get("enabled") == "auto":
            ds[key]["enabled"] = bool(bf16 and torch.cuda.is_available()) if key == "bf16" else False
    return ds


def prepare(model: torch.nn.Module, optimizer: Any, cfg: DistributedConfig | None, *,
            grad_clip: float | None, bf16: bool = False, bf16_params: bool = False) -> Trainable:
    """Wrap `model` + `optimizer` for training as `cfg` says (None: plain single-process PyTorch).
    bf16_params: the passes run on a bf16 twin, the optimizer on the fp32 model (rlvr.distributed.bf16_params)."""
    cfg = cfg or DistributedConfig()
    if bf16_params and (cfg.deepspeed is not None or cfg.gradient_checkpointing):
        raise ConfigError("bf16_params: not with distributed.deepspeed (use its bf16 mode) or gradient_checkpointing")
    if cfg.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False) and not hasattr(model, "base_model"):
            raise ConfigError("distributed.gradient_checkpointing: this model does not support it")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "config"):
            model.config.use_cache = False
    if cfg.deepspeed is None:
        if context().distributed:
            raise ConfigError("launched with several processes but distributed.deepspeed is not set "
                              "(set distributed.deepspeed=recipes/deepspeed/zero2.json)")
        if bf16_params:
            from rlvr.distributed.bf16_params import BF16ParamsTrainable
            return BF16ParamsTrainable(model, optimizer, grad_clip)
        return PlainTrainable(model, optimizer, grad_clip)
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"distributed.deepspeed is set but deepspeed cannot be imported ({e})") from None
    context()   # join the process group before DeepSpeed looks for one
    ds = complete_deepspeed_config(read_deepspeed_config(cfg.deepspeed), grad_clip=grad_clip, bf16=bf16)
    return DeepSpeedTrainable(model, optimizer, ds)


def as_trainable(opt_or_trainable: Any, model: torch.nn.Module, grad_clip: float | None) -> Trainable:
    """A Trainable as is; a bare torch optimizer wrapped as PlainTrainable (callers that predate the seam)."""
    if isinstance(opt_or_trainable, Trainable):
        return opt_or_trainable
    return PlainTrainable(model, opt_or_trainable, grad_clip)
