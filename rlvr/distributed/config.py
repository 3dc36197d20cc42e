"""Recipe sections for scale-out: `distributed:` (DeepSpeed, gradient checkpointing) and `lora:` (peft adapters)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import field_validator

from rlvr.config import Config
from rlvr.errors import ConfigError

__all__ = ["DistributedConfig", "LoRAConfig", "read_deepspeed_config"]


class DistributedConfig(Config):
    deepspeed: str | None = None
    """DeepSpeed JSON config (e.g. recipes/deepspeed/zero2.json); None: plain PyTorch optimizer, no ZeRO"""
    gradient_checkpointing: bool = False
    """recompute activations in backward (HF gradient_checkpointing_enable): less memory, ~30% more compute"""

    @field_validator("deepspeed")
    @classmethod
    def _exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"DeepSpeed config {v!r} not found")
        return v


class LoRAConfig(Config):
    enabled: bool = False
    """train low-rank adapters (peft) instead of all weights; the reference model is the adapters-off base"""
    r: int = 8
    """adapter rank"""
    alpha: float = 16.0
    """scaling numerator: the update is (alpha / r) * B @ A"""
    dropout: float = 0.0
    """dropout on the adapter input"""
    target_modules: list[str] | str = "all-linear"
    """module names to adapt (e.g. [q_proj, v_proj]) or peft's `all-linear` (every linear layer but the head)"""

    @field_validator("r")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v


def read_deepspeed_config(path: str) -> dict[str, Any]:
    """The JSON config as a dict; a malformed file is one ConfigError naming the file and line."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"distributed.deepspeed: {path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"distributed.deepspeed: {path}:{e.lineno}: invalid JSON ({e.msg})") from None
