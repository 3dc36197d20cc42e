"""`grpo.env`: the multi-turn knob of a GRPO stage (None keeps the single-turn path). See docs/multiturn.md."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from rlvr.config import Config

__all__ = ["MultiTurnConfig"]


class MultiTurnConfig(Config):
    """GRPO over multi-turn dialogues with an environment (rlvr.envs)."""

    name: str
    """environment name (rlvr.envs registry): retry, arithmetic_retry, code_retry, or your own"""
    max_turns: int = Field(3, ge=1)
    """most model turns per dialogue"""
    credit: str = "outcome"
    """credit assignment (rlvr.algos.credit): outcome = final outcome to every turn; per_turn = discounted
    reward-to-go per turn"""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """turn-level discount γ of per_turn credit: G_t = Σ_{k>=t} γ^(k-t) r_k"""
    max_tokens: int = Field(512, ge=2)
    """token budget of the whole dialogue state (first prompt + every turn + feedback); a dialogue that would
    exceed it ends (rule in rlvr.rollout.multiturn)"""
    options: dict[str, Any] = {}
    """keyword options of the environment, e.g. {feedback: "Wrong, try again.", turn_discount: 0.5}"""

    @field_validator("credit")
    @classmethod
    def _known_credit(cls, v: str) -> str:
        from rlvr.algos.credit import CREDIT
        if v not in CREDIT:
            raise ValueError(f"unknown credit assignment {v!r}; known: {', '.join(CREDIT.names())}")
        return v

    @field_validator("name")
    @classmethod
    def _known_env(cls, v: str) -> str:
        from rlvr.envs.base import list_envs
        if v not in list_envs():
            raise ValueError(f"unknown environment {v!r}; known: {', '.join(list_envs())}")
        return v
