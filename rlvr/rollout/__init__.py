"""Rollout engines: `SamplingParams`, `Rollout`, the `RolloutEngine` protocol and the backend registry.

Backends live in sibling modules (`hf.py`, `vllm.py`) and are imported on demand by `get_engine`.
`multiturn.py` drives multi-turn dialogues with any engine (docs/multiturn.md).
"""
from rlvr.rollout.base import (FinishReason, Prompt, Rollout, RolloutEngine, SamplingParams, get_engine, list_engines,
                               register_engine)

__all__ = ["FinishReason", "Prompt", "Rollout", "RolloutEngine", "SamplingParams", "get_engine", "list_engines",
           "register_engine"]
