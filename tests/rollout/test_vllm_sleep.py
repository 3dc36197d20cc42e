"""Sleep mode of the vLLM engine without vLLM or a GPU: `VLLMEngine` runs against a fake `vllm` module whose
`LLM` records every call, so these tests pin the call order (sleep after each engine call, wake only what is
asleep, weights before a sync) and the platform guard. Real CUDA sleep/wake is untested (no GPU here)."""
from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch

from rlvr.errors import RLVRError
from rlvr.models.tiny import default_model_dir
from rlvr.rollout import SamplingParams
from rlvr.rollout._vllm_sleep import SleepCycle, resolve_sleep_mode
from rlvr.rollout.vllm import VLLMEngine

TINY = str(default_model_dir())


class FakeLLM:
    """Records calls in `log`; generate returns one EOS-terminated token per sample."""

    def __init__(self, log: list, **options):
        self.log, self.options = log, options
        self.loaded: dict[str, torch.Tensor] = {}
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=lambda: log.append("shutdown")))

    def generate(self, requests, params, use_tqdm=False):
        self.log.append("generate")
        per_request = params if isinstance(params, list) else [params] * len(requests)
        eos = self.options["eos"]
        done = SimpleNamespace(token_ids=[eos], logprobs=[{eos: SimpleNamespace(logprob=-0.5)}],
                               finish_reason="stop", stop_reason=None)
        return [SimpleNamespace(outputs=[done] * p.n, prompt_logprobs=[None] + [
            {t: SimpleNamespace(logprob=-1.0)} for t in r["prompt_token_ids"][1:]])
            for r, p in zip(requests, per_request)]

    def sleep(self, level: int = 1, mode: str = "abort"):
        self.log.append(("sleep", level))

    def wake_up(self, tags=None):
        self.log.append(("wake_up", tuple(tags)))
        return True

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.log.append(method)
        self.loaded = dict(kwargs["weights_iterator"])

    def reset_prefix_cache(self):
        self.log.append("reset_prefix_cache")
        return True


@pytest.fixture
def fake_vllm(monkeypatch):
    """Install a fake `vllm`; returns (call log, set_platform(device_type)). The default platform is CUDA."""
    from transformers import AutoTokenizer

    log: list = []
    eos = AutoTokenizer.from_pretrained(TINY).eos_token_id
    platform = SimpleNamespace()

    def set_platform(device_type: str) -> None:
        platform.device_type = device_type
        platform.is_cpu = lambda: device_type == "cpu"
        platform.is_sleep_mode_available = lambda: device_type in ("cuda", "rocm", "xpu")

    vllm = types.ModuleType("vllm")
    vllm.LLM = lambda **options: FakeLLM(log, eos=eos, **options)
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**{"n": 1, **kw})
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = platform
    vllm.platforms = platforms
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    set_platform("cuda")
    return log, set_platform


def test_cuda_engine_sleeps_after_each_call_and_wakes_weights_before_a_sync(fake_vllm):
    log, _ = fake_vllm
    engine = VLLMEngine(TINY, dtype="bfloat16")
    try:
        assert engine.sleep_mode and engine._llm.options["enable_sleep_mode"] is True
        params = SamplingParams(n=2, max_new_tokens=4, seed=0)
        groups = engine.generate(["1+2="], params)
        assert [len(g) for g in groups] == [2] and groups[0][0].finish_reason == "stop"
        assert log == ["generate", ("sleep", 1)]                         # asleep while the trainer runs
        del log[:]
        engine.update_weights({"w": torch.ones(3), "ids": torch.arange(3)})
        assert log == [("wake_up", ("weights",)), "reload_weights", "reset_prefix_cache"]
        # fp32 trainer tensors reach a bf16 engine already cast; integer buffers are left alone
        assert engine._llm.loaded["w"].dtype == torch.bfloat16 and engine._llm.loaded["ids"].dtype == torch.int64
        del log[:]
        engine.generate(["1+2="], params)
        assert log == [("wake_up", ("kv_cache",)), "generate", ("sleep", 1)]   # only what was still asleep
        del log[:]
        engine.score([[1, 2, 3]])
        assert log == [("wake_up", ("weights", "kv_cache")), "generate", ("sleep", 1)]
    finally:
        engine.close()


def test_cpu_engine_never_sleeps_by_default(fake_vllm):
    log, set_platform = fake_vllm
    set_platform("cpu")
    engine = VLLMEngine(TINY)
    try:
        assert not engine.sleep_mode and engine._llm.options["enable_sleep_mode"] is False
        engine.generate(["1+2="], SamplingParams(n=1, max_new_tokens=4, seed=0))
        engine.update_weights({"w": torch.ones(3)})
        engine.generate(["1+2="], SamplingParams(n=1, max_new_tokens=4, seed=0))
        assert log == ["generate", "reload_weights", "reset_prefix_cache", "generate"]
    finally:
        engine.close()


def test_sleep_mode_is_configurable_and_refused_where_vllm_has_none(fake_vllm):
    log, set_platform = fake_vllm
    engine = VLLMEngine(TINY, sleep_mode=False)                # CUDA, switched off
    engine.generate(["1+2="], SamplingParams(n=1, max_new_tokens=4, seed=0))
    assert engine._llm.options["enable_sleep_mode"] is False and log == ["generate"]
    engine.close()
    set_platform("cpu")
    with pytest.raises(RLVRError) as err:
        VLLMEngine(TINY, sleep_mode=True)
    assert "rollout.sleep_mode" in str(err.value) and "cpu" in str(err.value) and "\n" not in str(err.value)


def test_resolve_sleep_mode_table():
    assert resolve_sleep_mode(None, True, "cuda") is True
    assert resolve_sleep_mode(None, False, "cpu") is False
    assert resolve_sleep_mode(False, True, "cuda") is False
    assert resolve_sleep_mode(True, True, "cuda") is True
    with pytest.raises(RLVRError, match=r"no sleep mode on this platform \(tpu\)"):
        resolve_sleep_mode(True, False, "tpu")


def test_sleep_from_a_partial_wake_wakes_the_rest_first():
    log: list = []
    llm = SimpleNamespace(sleep=lambda level: log.append(("sleep", level)),
                          wake_up=lambda tags: log.append(("wake_up", tuple(tags))))
    cycle = SleepCycle(llm, enabled=True)
    cycle.sleep()
    cycle.sleep()                                              # already asleep: nothing to do
    cycle.wake(["weights"])
    cycle.sleep()
    assert log == [("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",)), ("sleep", 1)]
    off = SleepCycle(llm, enabled=False)
    off.sleep()
    off.wake()
    assert len(log) == 4


def test_rollout_sleep_mode_flag_reaches_the_vllm_engine_only():
    from rlvr.recipe import RolloutConfig

    assert "sleep_mode" not in RolloutConfig(backend="vllm").engine_kwargs()
    assert RolloutConfig(backend="vllm", sleep_mode=False).engine_kwargs()["sleep_mode"] is False
    with pytest.raises(ValueError, match="rollout.sleep_mode is a vLLM option"):
        RolloutConfig(backend="hf", sleep_mode=True)
