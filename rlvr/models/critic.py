"""The PPO critic: a `ValueHeadModel` (rlvr.models.value_head) reading values at completion positions, and the
`ActorCritic` pair that checkpoints policy and critic together.

    values[b, t] = V(prompt_b, c_b,<t)  = scores[b, P - 1 + t]         batch in the PackedBatch layout [B, P + C]

The hidden state at position P-1+t is the one that predicts completion token t, i.e. the state *before* token
t is emitted, which is what GAE's V(s_t) needs; the value after the last token is 0 (gae_advantages).

Two layouts (config `critic`):
- `separate`: the critic has its own copy of the policy's trunk (or a saved value model, e.g. a reward model);
  twice the parameters, no interference between the value and policy gradients (InstructGPT, TRL).
- `shared`: the critic's backbone *is* the policy's trunk (the same module), plus a head of H+1 parameters;
  the value loss then also shapes the trunk. The trunk still runs twice per micro-batch (once for the LM
  logits, once for the values): simple, and negligible at the sizes this runs on CPU.

LoRA (a peft policy): a separate critic is a plain copy of the policy's trunk at its *base* weights (no policy
adapters inside, so disabling the policy's adapters for the reference never touches the critic) with its *own*
LoRA adapters, same r / alpha / targets as the policy's, on a frozen base: the critic trains adapters + head only.
A shared critic puts the head on the policy's (adapted) trunk. Checkpoints hold the policy's adapters
(`model/adapter/`, merged weights in `model/` as for any LoRA save) and the critic's state.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from rlvr.errors import ConfigError
from rlvr.models.value_head import ValueHeadModel, is_value_model
from rlvr.trainers.common import PackedBatch, module_device

__all__ = ["CRITIC_LAYOUTS", "ActorCritic", "build_critic", "completion_values", "CRITIC_FILE"]

CRITIC_FILE = "critic.safetensors"
CRITIC_META = "critic.json"
CRITIC_LAYOUTS = ("separate", "shared")
_PREFIX = "critic."


def _trunk(policy: nn.Module) -> nn.Module:
    """The base model (embeddings + decoder layers + final norm) inside an HF causal LM (peft-wrapped or not)."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    return getattr(base, base.base_model_prefix)


def _base_trunk_copy(policy: nn.Module) -> nn.Module:
    """A plain HF base model (no adapter layers) holding a peft policy's trunk at its base weights."""
    from transformers import AutoModel

    from rlvr.distributed.lora import merged_state_dict

    base = policy.get_base_model()
    prefix = base.base_model_prefix + "."
    like = next(base.parameters())
    trunk = AutoModel.from_config(base.config).to(device=like.device, dtype=like.dtype)
    weights = merged_state_dict(policy, adapters=False)
    trunk.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
    return trunk


def _own_adapters(critic: ValueHeadModel, policy: nn.Module) -> ValueHeadModel:
    """Fresh LoRA adapters (the policy's LoRA settings) injected into the critic's backbone, whose base is frozen."""
    from peft import inject_adapter_in_model

    cfg = copy.deepcopy(next(iter(policy.peft_config.values())))
    cfg.task_type = None
    inject_adapter_in_model(cfg, critic.backbone)
    return critic


def build_critic(policy: nn.Module, layout: str = "separate", init_path: str | None = None) -> ValueHeadModel:
    """A critic for `policy`. separate: a deep copy of the policy's trunk (or the value model saved at
    `init_path`) + a head; shared: the policy's own trunk module + a head. A new head starts at zero."""
    critic = _build(policy, layout, init_path)
    if init_path is None:
        # V ≡ 0 to start: the first advantages are then the plain (KL-shaped) returns, not a random head's noise,
        # which would otherwise swamp a 0/1 verifier reward once whitened.
        torch.nn.init.zeros_(critic.head.weight)
        torch.nn.init.zeros_(critic.head.bias)
    return critic


def _build(policy: nn.Module, layout: str, init_path: str | None) -> ValueHeadModel:
    if layout not in CRITIC_LAYOUTS:
        raise ConfigError(f"critic: unknown layout {layout!r}; known: {', '.join(CRITIC_LAYOUTS)}")
    from rlvr.distributed.lora import is_peft

    if layout == "shared":
        if init_path is not None:
            raise ConfigError("critic_init: a shared-trunk critic starts from the policy; use critic=separate")
        return ValueHeadModel(_trunk(policy), meta={"kind": "critic", "layout": "shared"})
    lora = is_peft(policy)
    if init_path is not None:
        if not is_value_model(init_path):
            raise ConfigError(f"critic_init: {init_path!r} is not a saved value-head model directory")
        critic = ValueHeadModel.from_pretrained(init_path).to(module_device(policy))
        critic.meta = {**critic.meta, "kind": "critic", "layout": "separate", "init": str(init_path)}
    else:
        trunk = _base_trunk_copy(policy) if lora else copy.deepcopy(_trunk(policy))
        critic = ValueHeadModel(trunk, meta={"kind": "critic", "layout": "separate"})
    if lora:
        critic.meta["lora"] = True
        _own_adapters(critic, policy)
    return critic


def completion_values(critic: ValueHeadModel, batch: PackedBatch) -> torch.Tensor:
    """V(s_t) for every completion token: batch [B, P + C] -> values [B, C] float32, 0 where the mask is 0."""
    batch = batch.to(module_device(critic))
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
    attn = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1).long()
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)      # as completion_logprobs: real tokens only
    scores = critic(input_ids, attention_mask=attn, position_ids=position_ids)   # [B, P + C]
    P, C = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    values = scores[:, P - 1:P - 1 + C]
    return values.masked_fill(~batch.completion_mask, 0.0)


class ActorCritic(nn.Module):
    """Policy (HF causal LM) + critic, checkpointed as one unit by `CheckpointManager`.

    Saved layout: the policy's own `save_pretrained` files (a plain HF model: the pipeline and HF load it
    without this code; a LoRA policy: merged weights + `adapter/`) + `critic.safetensors` (keys `critic.*`: the
    head, plus the trunk when separate) + `critic.json` (its meta). `restore_from(dir)` loads that layout back
    (the policy's adapters when it has them: its base weights are those it was built from).
    """

    def __init__(self, policy: nn.Module, critic: ValueHeadModel):
        super().__init__()
        self.policy, self.critic = policy, critic
        self.shared = critic.backbone is _trunk(policy)

    def critic_only_parameters(self) -> list[nn.Parameter]:
        """Critic parameters not owned by the policy (all of the critic when separate, the head when shared)."""
        own = {id(p) for p in self.policy.parameters()}
        return [p for p in self.critic.parameters() if id(p) not in own]

    def _critic_state(self) -> dict[str, torch.Tensor]:
        mod = self.critic.head if self.shared else self.critic
        prefix = "head." if self.shared else ""
        return {f"{_PREFIX}{prefix}{k}": v.detach().contiguous().cpu() for k, v in mod.state_dict().items()}

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        from safetensors.torch import save_file

        from rlvr.distributed.lora import is_peft, save_model

        path = Path(path)
        if is_peft(self.policy):
            save_model(self.policy, path)            # merged weights (a plain HF model) + the adapters
        else:
            self.policy.save_pretrained(path, **kwargs)
        save_file(self._critic_state(), str(path / CRITIC_FILE))
        (path / CRITIC_META).write_text(json.dumps(self.critic.meta, indent=1) + "\n")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Keys `critic.*` go to the critic (head only when shared); all others to the policy, with or without
        a `policy.` prefix. Returns the merged (missing, unexpected) keys."""
        policy_sd = {k.removeprefix("policy."): v for k, v in state_dict.items() if not k.startswith(_PREFIX)}
        p = self.policy.load_state_dict(policy_sd, strict=False, assign=assign)
        c_missing, c_unexpected = self._load_critic(state_dict, assign)
        missing = [f"policy.{k}" for k in p.missing_keys] + c_missing
        unexpected = list(p.unexpected_keys) + c_unexpected
        if strict and (missing or unexpected):
            raise RuntimeError(f"ActorCritic.load_state_dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return _IncompatibleKeys(missing, unexpected)

    def _load_critic(self, state_dict: dict[str, torch.Tensor], assign: bool = False) -> tuple[list, list]:
        """The `critic.*` keys of `state_dict` into the critic (its head when shared): (missing, unexpected)."""
        critic_sd = {k[len(_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_PREFIX)}
        if self.shared:
            c = self.critic.head.load_state_dict({k.removeprefix("head."): v for k, v in critic_sd.items()},
                                                 strict=False, assign=assign)
            return [f"{_PREFIX}head.{k}" for k in c.missing_keys], [f"{_PREFIX}{k}" for k in c.unexpected_keys]
        c = self.critic.load_state_dict(critic_sd, strict=False, assign=assign)
        return [f"{_PREFIX}{k}" for k in c.missing_keys], [f"{_PREFIX}{k}" for k in c.unexpected_keys]

    def restore_from(self, model_dir: str | Path) -> None:
        """Load a `save_pretrained` directory back (CheckpointManager.restore calls this)."""
        from safetensors.torch import load_file

        from rlvr.distributed.lora import is_peft, load_adapter_weights

        weights: dict[str, torch.Tensor] = {}
        for f in sorted(Path(model_dir).glob("*.safetensors")):
            weights.update(load_file(f))
        if is_peft(self.policy):
            load_adapter_weights(self.policy, model_dir)
            missing, unexpected = self._load_critic(weights)
        else:
            missing, unexpected = self.load_state_dict(weights, strict=False)
            # Tied weights (lm_head = embed) are saved once; anything else missing is a real problem.
            missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {model_dir}: missing {missing[:5]}, unexpected {unexpected[:5]}")
