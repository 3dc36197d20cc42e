"""A scalar head on a causal LM's hidden states: the reward model, the process reward model and (later) the
PPO critic are all this one module.

    scores = head(norm(h_T))            h [B, T, H] last-layer hidden states -> scores [B, T] (float32)

A reward model reads `scores` at the last real token of each sequence; a PRM reads them at the last token of
each step (the step separator), as logits of P(step correct).

Saved layout (`save_pretrained(dir)`): the backbone's own `save_pretrained` files (config.json,
model.safetensors: a plain HF base model, loadable without this code), plus `value_head.safetensors`
(`head.weight` [1, H], `head.bias` [1]) and `value_head.json` (what the head was trained as, e.g.
`{"kind": "prm", "step_separator": "\\n"}`). `load_state_dict` accepts the merged keys of both files.

LoRA (`add_lora`, config `lora:` of the RM / PRM trainers): peft adapters on the backbone's linear layers, whose
base weights freeze; the head stays outside peft and trains fully. A save then writes the *merged* backbone
(W + (alpha/r)·B@A under the base names: the same plain layout, so verifiers and the next stage load it with no
LoRA code) and the adapters in `adapter/`, from which `restore_from` (CheckpointManager.restore) resumes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.errors import ConfigError

__all__ = ["ValueHeadModel", "load_value_model", "is_value_model", "right_pad", "last_token_index",
           "one_token_scores", "HEAD_FILE", "META_FILE"]

HEAD_FILE = "value_head.safetensors"
META_FILE = "value_head.json"


class ValueHeadModel(nn.Module):
    """`backbone` (an HF base model, e.g. LlamaModel) + `head` (Linear H -> 1). `meta` is saved with it."""

    def __init__(self, backbone: nn.Module, meta: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        p = next(backbone.parameters(), None)   # the head lives where the backbone does (a GPU trunk: on the GPU)
        self.head = nn.Linear(hidden, 1, device=p.device if p is not None else None)
        # Small init so initial rewards are ~0 and BT/BCE start near log 2 (std 1/sqrt(H+1), as InstructGPT/TRL).
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.meta = dict(meta or {})

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> scores [B, T] float32 (one scalar per position)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False)
        h = out.last_hidden_state                                  # [B, T, H], already final-normed
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1).float()

    # ------------------------------------------------------------------------------------------------ LoRA
    def add_lora(self, cfg: Any) -> "ValueHeadModel":
        """Fresh LoRA adapters on the backbone (a `LoRAConfig`; no-op unless enabled): the backbone's own weights
        freeze, the head keeps training. Returns self."""
        from rlvr.distributed.lora import inject_lora

        inject_lora(self.backbone, cfg)
        return self

    @property
    def has_adapters(self) -> bool:
        from rlvr.distributed.lora import has_injected_adapters

        return has_injected_adapters(self.backbone)

    # ------------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """The saved layout (module doc); with adapters the backbone is written merged, the adapters in adapter/."""
        from safetensors.torch import save_file

        from rlvr.distributed.lora import merged_state_dict, save_adapters

        path = Path(path)
        if self.has_adapters:
            self.backbone.save_pretrained(path, state_dict=merged_state_dict(self.backbone), **kwargs)
            save_adapters(self.backbone, path / "adapter")
        else:
            self.backbone.save_pretrained(path, **kwargs)
        head = {f"head.{k}": v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(head, str(path / HEAD_FILE))
        (path / META_FILE).write_text(json.dumps(self.meta, indent=1) + "\n")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accepts both this module's own keys and the saved layout's (backbone keys without a prefix)."""
        own = {k if k.startswith(("head.", "backbone.")) else f"backbone.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(own, strict=strict, assign=assign)

    def restore_from(self, path: str | Path) -> None:
        """Load a `save_pretrained` dir back into this model (CheckpointManager.restore calls it). With adapters:
        the adapters and the head (the frozen base is the one this model was built from); else every weight."""
        from safetensors.torch import load_file

        from rlvr.distributed.lora import load_adapter_weights

        path = Path(path)
        if self.has_adapters:
            load_adapter_weights(self.backbone, path)
            head = load_file(str(path / HEAD_FILE))
            self.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
            return
        weights = {}
        for f in sorted(path.glob("*.safetensors")):
            weights.update(load_file(f))
        missing, unexpected = self.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {path}: missing {missing[:5]}, unexpected {unexpected[:5]}")

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: str = "float32") -> "ValueHeadModel":
        """Load a saved ValueHeadModel directory (backbone + head + meta)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        path = Path(path)
        backbone = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
        model = cls(backbone, json.loads((path / META_FILE).read_text()))
        head = load_file(str(path / HEAD_FILE))
        model.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
        return model.to(getattr(torch, dtype))

    @classmethod
    def from_causal_lm(cls, path: str | Path, *, dtype: str = "float32",
                       meta: dict[str, Any] | None = None) -> "ValueHeadModel":
        """A fresh head on the base model of a causal-LM checkpoint (its LM head is not loaded)."""
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(str(path), dtype=getattr(torch, dtype))
        return cls(backbone, meta).to(getattr(torch, dtype))


def is_value_model(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file() and (Path(path) / HEAD_FILE).is_file()


def load_value_model(path: str, *, dtype: str = "float32", meta: dict[str, Any] | None = None,
                     expect_kind: str | None = None, device: str | torch.device | None = None
                     ) -> tuple[ValueHeadModel, Any]:
    """(model, tokenizer) from a saved ValueHeadModel dir, or a fresh head on a causal LM (`tiny`, dir, hub id),
    on `device` (default: this rank's, rlvr.distributed.context).

    `expect_kind` ("reward" / "prm"): a saved model trained as something else is a ConfigError.
    The tokenizer gets a pad token (EOS when it has none) and right padding (see `right_pad`).
    """
    from transformers import AutoTokenizer

    from rlvr.trainers.common import resolve_model_path

    resolved = resolve_model_path(path)
    if Path(resolved).is_absolute() or resolved.startswith((".", "~")):
        if not Path(resolved).expanduser().is_dir():          # a local path: never fall back to the hub
            raise ConfigError(f"model: {path!r}: no such directory")
        resolved = str(Path(resolved).expanduser())
    try:
        tok = AutoTokenizer.from_pretrained(resolved)
        if is_value_model(resolved):
            model = ValueHeadModel.from_pretrained(resolved, dtype=dtype)
        else:
            model = ValueHeadModel.from_causal_lm(resolved, dtype=dtype, meta=meta)
    except OSError as e:
        raise ConfigError(f"model: cannot load {path!r}: {str(e).splitlines()[0]}") from None
    kind = model.meta.get("kind")
    if expect_kind is not None and kind is not None and kind != expect_kind:
        raise ConfigError(f"model: {path!r} is a {kind!r} model, expected a {expect_kind!r} model")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    if device is None:
        from rlvr.distributed.context import context
        device = context().device
    return model.to(device), tok


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (input_ids [B, L], attention_mask [B, L]) right-padded, L = longest row.

    Right padding keeps positions 0..len-1 for real tokens, so no position_ids are needed.
    """
    L = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, :len(r)] = 1
    return ids, attn


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask [B, L] (right-padded) -> index of each row's last real token [B]."""
    return (attention_mask.sum(-1) - 1).clamp(min=0)


def one_token_scores(model: ValueHeadModel) -> torch.Tensor:
    """The model's scores [1, 1] on a single token: the forward of a zero-loss backward that keeps a rank with no
    rows in step with the others' collectives (`Trainable.backward_nothing`)."""
    device = next(model.parameters()).device
    return model(torch.zeros((1, 1), dtype=torch.long, device=device))
