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
from rlvr.trainers.common import PackedBatch

__all__ = ["CRITIC_LAYOUTS", "ActorCritic", "build_critic", "completion_values", "CRITIC_FILE"]

CRITIC_FILE = "critic.safetensors"
CRITIC_META = "critic.json"
CRITIC_LAYOUTS = ("separate", "shared")
_PREFIX = "critic."


def _trunk(policy: nn.Module) -> nn.Module:
    """The base model (embeddings + decoder layers + final norm) inside an HF causal LM."""
    return getattr(policy, policy.base_model_prefix)


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
    if layout == "shared":
        if init_path is not None:
            raise ConfigError("critic_init: a shared-trunk critic starts from the policy; use critic=separate")
        return ValueHeadModel(_trunk(policy), meta={"kind": "critic", "layout": "shared"})
    if init_path is not None:
        if not is_value_model(init_path):
            raise ConfigError(f"critic_init: {init_path!r} is not a saved value-head model directory")
        critic = ValueHeadModel.from_pretrained(init_path)
        critic.meta = {**critic.meta, "kind": "critic", "layout": "separate", "init": str(init_path)}
        return critic
    return ValueHeadModel(copy.deepcopy(_trunk(policy)), meta={"kind": "critic", "layout": "separate"})


def completion_values(critic: ValueHeadModel, batch: PackedBatch) -> torch.Tensor:
    """V(s_t) for every completion token: batch [B, P + C] -> values [B, C] float32, 0 where the mask is 0."""
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
    without this code) + `critic.safetensors` (keys `critic.*`: the head, plus the trunk when separate) +
    `critic.json` (its meta). `load_state_dict` accepts that merged key set.
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

        path = Path(path)
        self.policy.save_pretrained(path, **kwargs)
        save_file(self._critic_state(), str(path / CRITIC_FILE))
        (path / CRITIC_META).write_text(json.dumps(self.critic.meta, indent=1) + "\n")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Keys `critic.*` go to the critic (head only when shared); all others to the policy, with or without
        a `policy.` prefix. Returns the merged (missing, unexpected) keys."""
        critic_sd = {k[len(_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_PREFIX)}
        policy_sd = {k.removeprefix("policy."): v for k, v in state_dict.items() if not k.startswith(_PREFIX)}
        p = self.policy.load_state_dict(policy_sd, strict=False, assign=assign)
        if self.shared:
            c = self.critic.head.load_state_dict({k.removeprefix("head."): v for k, v in critic_sd.items()},
                                                 strict=False, assign=assign)
            c_missing = [f"{_PREFIX}head.{k}" for k in c.missing_keys]
        else:
            c = self.critic.load_state_dict(critic_sd, strict=False, assign=assign)
            c_missing = [f"{_PREFIX}{k}" for k in c.missing_keys]
        missing = [f"policy.{k}" for k in p.missing_keys] + c_missing
        unexpected = list(p.unexpected_keys) + [f"{_PREFIX}{k}" for k in c.unexpected_keys]
        if strict and (missing or unexpected):
            raise RuntimeError(f"ActorCritic.load_state_dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return _IncompatibleKeys(missing, unexpected)
