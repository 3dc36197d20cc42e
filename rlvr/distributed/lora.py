"""LoRA adapters through `peft`, usable by every trainer.

- `apply_lora(model, cfg)` wraps an HF causal LM in a PeftModel: only the adapters (rank r, scale alpha/r) train.
- `reference_model(model)`: the frozen reference policy. With adapters it is the *same* model with adapters
  disabled (peft's `disable_adapter()`), i.e. exactly the base weights and no second copy in memory; without
  adapters it is a frozen deep copy, as before.
- `merged_state_dict(model)`: base-named weights W + (alpha/r)·B@A — what a rollout engine (vLLM) or a saved HF
  model needs. Computed out of place, so training is not disturbed (peft's in-place merge/unmerge would drift).
- `save_model(model, dir)`: a loadable HF model dir (merged weights); adapters are also saved under `dir/adapter`.
- `sync_weights(engine, model)`: hand the engine the module it shares, or merged weights it can load.
- `inject_lora(module, cfg)`: adapters put into a plain module in place, no PeftModel wrapper — for a trunk under
  a head of our own (reward model, PRM: `ValueHeadModel.add_lora`), where the head stays outside peft and trains
  fully; `merged_state_dict` / `save_adapters` / `load_adapter_weights` work on such a module too.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator

import torch

from rlvr.distributed.config import LoRAConfig
from rlvr.models.packed_linear import can_pack, pack_linears

__all__ = ["apply_lora", "inject_lora", "is_peft", "has_injected_adapters", "reference_model", "merged_state_dict",
           "save_model", "save_adapters", "load_adapter_weights", "sync_weights", "AdaptersOff"]


def is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def has_injected_adapters(module: Any) -> bool:
    """True for a plain module that `inject_lora` gave adapters (peft sets `peft_config` on it)."""
    return hasattr(module, "peft_config") and not is_peft(module)


def _peft_config(cfg: LoRAConfig, task_type: str | None) -> Any:
    from peft import LoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      task_type=task_type)


@contextlib.contextmanager
def _target_errors() -> Iterator[None]:
    try:
        yield
    except ValueError as e:   # e.g. target modules not found in the model
        from rlvr.errors import ConfigError
        raise ConfigError(f"lora.target_modules: {str(e).splitlines()[0]}") from None


def apply_lora(model: torch.nn.Module, cfg: LoRAConfig | None) -> torch.nn.Module:
    """`model` wrapped with fresh LoRA adapters when cfg.enabled (B = 0, so the output is unchanged), else `model`."""
    if cfg is None or not cfg.enabled:
        return model
    from peft import get_peft_model

    with _target_errors():
        return get_peft_model(model, _peft_config(cfg, "CAUSAL_LM"))


def inject_lora(module: torch.nn.Module, cfg: LoRAConfig | None) -> torch.nn.Module:
    """Fresh LoRA adapters (B = 0: outputs unchanged) put into `module` in place with peft's
    `inject_adapter_in_model`, which also freezes every other weight of `module`; a no-op unless cfg.enabled.
    Parameters outside `module` (a value head around a trunk) are left as they are. Returns `module`."""
    if cfg is None or not cfg.enabled:
        return module
    from peft import inject_adapter_in_model

    with _target_errors():
        inject_adapter_in_model(_peft_config(cfg, None), module)
    return module


class AdaptersOff:
    """Callable like the model, but runs it with adapters disabled and in eval mode: the frozen base policy.
    `train()` / `eval()` do nothing (the policy's mode is its own); `state_dict()` is the base weights."""

    training = False

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.model(*args, **kwargs)
        finally:
            self.model.train(was_training)

    def eval(self) -> "AdaptersOff":
        return self

    def train(self, mode: bool = True) -> "AdaptersOff":
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return merged_state_dict(self.model, adapters=False)

    def requires_grad_(self, flag: bool = True) -> "AdaptersOff":
        return self


def reference_model(model: torch.nn.Module, *, pack_bf16: bool = False, param_dtype: torch.dtype | None = None) -> Any:
    """The frozen reference: adapters-off view of a peft model, else a frozen deep copy.

    param_dtype: the copy's parameters in this dtype (buffers such as rotary tables keep theirs), e.g. bf16 to
    match a policy trained with bf16 parameters (GRPO `bf16_params`).

    pack_bf16: for a copy that only ever runs under bf16 autocast: on a CPU with oneDNN bf16 kernels its linears
    hold pre-packed bf16 weights (rlvr.models.packed_linear: same outputs, no per-forward weight casts; opt-in, see
    docs/performance.md for what it measured)."""
    if is_peft(model):
        return AdaptersOff(model)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    if param_dtype is not None:
        from rlvr.distributed.bf16_params import cast_params
        cast_params(ref, param_dtype)
    if pack_bf16 and can_pack(ref):
        pack_linears(ref)
    return ref


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module, adapters: bool = True) -> dict[str, torch.Tensor]:
    """Base-model state dict with the active adapters folded in: W' = W + Σ_adapters scale·B@A (base names).
    adapters=False: the base weights W alone. Works on a peft model and on an `inject_lora` module."""
    if is_peft(model):
        base = model.get_base_model()
    elif has_injected_adapters(model):
        base = model
    else:
        return {k: v.detach() for k, v in model.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, torch.Tensor] = {}
    for name, mod in base.named_modules() if adapters else ():
        if isinstance(mod, LoraLayer) and not getattr(mod, "disable_adapters", False):
            delta = None
            for adapter in mod.active_adapters:
                if adapter in mod.lora_A:
                    d = mod.get_delta_weight(adapter)
                    delta = d if delta is None else delta + d
            if delta is not None:
                deltas[f"{name}.weight"] = delta
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        out[key] = (value + deltas[key].to(value.dtype)) if key in deltas else value.detach()
    return out


def save_model(model: torch.nn.Module, path: str | Path, tokenizer: Any = None) -> None:
    """save_pretrained of a loadable HF model (merged weights for peft models, adapters also in `path/adapter`)."""
    path = Path(path)
    if is_peft(model):
        model.get_base_model().save_pretrained(path, state_dict=merged_state_dict(model), safe_serialization=True)
        model.save_pretrained(path / "adapter")
    else:
        model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def save_adapters(module: torch.nn.Module, path: str | Path) -> None:
    """The adapters of an `inject_lora` module in peft's layout: `path/adapter_model.safetensors` (keys without the
    adapter name) + `path/adapter_config.json`."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(module).items()}
    save_file(weights, str(path / "adapter_model.safetensors"))
    module.peft_config["default"].save_pretrained(path)


def load_adapter_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load adapters saved under `path/adapter` (by `save_model`, or `save_adapters(m, path / "adapter")`) into the
    live peft model or `inject_lora` module `model`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    files = sorted((Path(path) / "adapter").glob("*.safetensors"))
    if not files:
        raise RuntimeError(f"{path}: no adapter weights (was the checkpoint written without lora?)")
    result = set_peft_model_state_dict(model, load_file(files[0]))
    bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if bad:
        raise RuntimeError(f"{path}: adapter weights do not fit this model: {bad[:3]}")


def sync_weights(engine: Any, model: torch.nn.Module) -> None:
    """Bring the rollout engine up to date with `model`: the module itself when the engine shares it (HF engine:
    a no-op) or when it has no adapters; merged base-named weights otherwise (vLLM with LoRA)."""
    if not is_peft(model) or getattr(engine, "model", None) is model:
        engine.update_weights(model)
    else:
        engine.update_weights(merged_state_dict(model))
