"""Sleep mode of the colocated vLLM engine: free the accelerator memory vLLM holds while the trainer runs.

A colocated `vllm.LLM` keeps its weights and a KV cache of `gpu_memory_utilization` x the GPU resident; the
optimizer step wants that memory back. vLLM (0.32: `LLM(enable_sleep_mode=True)`, `LLM.sleep(level)`,
`LLM.wake_up(tags)`, tags from `("weights", "kv_cache")`) can release it in between:

    generate / score:  wake_up(tags=<whatever is asleep>) -> llm.generate(...) -> sleep(level=1)
    training phase:    asleep — level 1: weights offloaded to CPU RAM, KV cache freed
    weight sync:       wake_up(tags=["weights"]) -> reload_weights -> (KV cache stays freed)
    next generate:     wake_up(tags=["kv_cache"]) -> ...

vLLM resumes its scheduler only once every tag is awake again (`EngineCore.wake_up`), so nothing is generated
half-awake; a level-1 sleep also clears the prefix cache. vLLM supports sleep mode only where
`current_platform.is_sleep_mode_available()` (CUDA, ROCm, XPU; not CPU): `resolve_sleep_mode` is the guard.
Not yet run on a GPU: the call order is unit-tested against a fake `LLM` (tests/rollout/test_vllm_sleep.py).
"""
from __future__ import annotations

from typing import Any, Iterable

from rlvr.errors import RLVRError

__all__ = ["SLEEP_TAGS", "SleepCycle", "resolve_sleep_mode"]

SLEEP_TAGS = ("weights", "kv_cache")     # what a level-1 sleep releases, in vLLM's tag names


def resolve_sleep_mode(requested: bool | None, available: bool, platform: str) -> bool:
    """Whether the engine uses sleep mode: `requested` (rollout.sleep_mode), or, when None, wherever vLLM
    supports it (`available` = current_platform.is_sleep_mode_available()). Asking for it where vLLM has none is
    an error rather than a silent no-op (vLLM itself would refuse to start)."""
    if requested is None:
        return available
    if requested and not available:
        raise RLVRError(f"rollout.sleep_mode: vLLM has no sleep mode on this platform ({platform}); "
                        f"set it to false or leave it unset")
    return bool(requested)


class SleepCycle:
    """Tracks which of a vLLM engine's allocations are asleep and drives `llm.sleep` / `llm.wake_up`.

    Disabled (CPU, or rollout.sleep_mode: false): every call is a no-op. Enabled: `sleep()` after each engine
    call, `wake(...)` before the next one; only the tags actually asleep are woken.
    """

    def __init__(self, llm: Any, enabled: bool):
        self.llm, self.enabled = llm, bool(enabled)
        self.asleep: set[str] = set()

    def wake(self, tags: Iterable[str] = SLEEP_TAGS) -> None:
        """Bring `tags` back to the device (weights copied back from CPU RAM, KV cache re-allocated)."""
        todo = [t for t in SLEEP_TAGS if t in tags and t in self.asleep]
        if todo:
            self.llm.wake_up(tags=todo)
            self.asleep.difference_update(todo)

    def sleep(self) -> None:
        """Level-1 sleep. From a partial wake (weights back after a sync, KV cache still freed) the rest is woken
        first: vLLM's executor `sleep` assumes everything is resident (it then marks every tag asleep)."""
        if not self.enabled or self.asleep == set(SLEEP_TAGS):
            return
        self.wake()
        self.llm.sleep(level=1)
        self.asleep = set(SLEEP_TAGS)
