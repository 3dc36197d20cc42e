"""Rollout engines: `SamplingParams`, `Rollout`, the `RolloutEngine` protocol and the backend registry.

Backends live in sibling modules (`hf.py`, later `vllm.py`) and are imported on demand by `get_engine`.
"""
from rlvr.rollout.base import (FinishReason, Prompt, Rollout, RolloutEngine, SamplingParams, get_engine, list_engines,
                               register_engine)

__all__ = ["FinishReason", "Prompt", "Rollout", "RolloutEngine", "SamplingParams", "get_engine", "list_engines",
           "register_engine"]
