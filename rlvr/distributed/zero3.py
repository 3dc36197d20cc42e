"""ZeRO-3 helpers: full weights for local forward passes, and DeepSpeed's per-forward bookkeeping.

Under ZeRO-3 every rank holds a 1/N slice of each parameter; DeepSpeed's module hooks all-gather a submodule's
parameters before its forward and free them after. That makes every forward a collective, so ranks must run the
same forward passes — which per-rank generation (different prompts, different completion lengths) does not.

`full_weights(engine)` does what TRL's `unwrap_model_for_generation` does: gather every parameter once
(`deepspeed.zero.GatheredParameters`), take DeepSpeed's hooks off the module (including the root pre-forward hook
that checks the module trace with a collective), run any number of purely local forward passes, then put the
hooks back and re-partition. Memory: the full weights on every rank for the duration (as ZeRO-2 holds always).

`clear_backward_seen(engine)`: `DeepSpeedEngine.forward` tells the ZeRO optimizer that a new forward/backward
begins (`clear_backward_seen_flag`); under ZeRO-3 that is what advances `micro_step_id` from "copy" to
"accumulate" gradient partitions. Our trainers call the wrapped module directly (`model(...)`), so without this
call every backward of a step overwrote the previous one's gradients (measured: only the last micro-batch reached
the update). `Trainable.backward` calls it before each backward, exactly where the engine's forward would have.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["full_weights", "full_parameters", "clear_backward_seen"]


def _offload(engine: Any) -> Any:
    """DeepSpeed's ZeRO-3 parameter manager (owner of the module hooks)."""
    opt = engine.optimizer
    return opt.parameter_offload if hasattr(opt, "parameter_offload") else opt


@contextlib.contextmanager
def full_weights(engine: Any) -> Iterator[None]:
    """Context (enter and exit on every rank together): full parameters, no ZeRO hooks, local forwards only."""
    import deepspeed

    off = _offload(engine)
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
        for p in engine.module.parameters():
            p.ds_active_sub_modules.clear()
        for h in off.forward_hooks + off.backward_hooks:
            h.remove()
        off.forward_hooks, off.backward_hooks = [], []
        root_hooks = off.module._forward_pre_hooks
        start_hook = root_hooks.pop(off.fwd_pre_hook.id, None)     # reset_step: a collective per root forward
        try:
            yield
        finally:
            if start_hook is not None:
                root_hooks[off.fwd_pre_hook.id] = start_hook
                root_hooks.move_to_end(off.fwd_pre_hook.id, last=False)    # first, as registered
            off._register_deepspeed_module(off.module)                    # (invalidates the prefetch trace)


@contextlib.contextmanager
def full_parameters(model: Any) -> Iterator[None]:
    """Context (enter on every rank together): a ZeRO-3-partitioned model's full parameters, read-only (hooks
    stay: for saving or reading weights, not for forward passes); a no-op for any other model. Stage saves use
    it: after training the model object is still partitioned."""
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def clear_backward_seen(engine: Any) -> None:
    """What `DeepSpeedEngine.forward` does first: mark the start of a new forward/backward for the ZeRO optimizer."""
    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    if isinstance(engine.optimizer, ZeROOptimizer):
        engine.optimizer.clear_backward_seen_flag()
