"""Fixtures for the vLLM engine tests: one fp32 vLLM engine on the tiny model per test module (start-up costs
seconds), and per test a fresh HF copy of the model synced into it, so tests that perturb weights stay independent.
Everything that needs vLLM skips with the import error as the reason where it cannot be imported."""
from __future__ import annotations

import pytest
import torch


def require_vllm() -> None:
    from rlvr.errors import RLVRError
    from rlvr.rollout.vllm import import_vllm

    try:
        import_vllm()
    except RLVRError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny_engine():
    require_vllm()
    from rlvr.models.tiny import default_model_dir
    from rlvr.rollout.vllm import VLLMEngine

    previous = torch.get_num_threads()
    torch.set_num_threads(1)                 # tiny model: a second thread only adds OpenMP stalls on a busy box
    engine = VLLMEngine(str(default_model_dir()), dtype="float32", kv_cache_gib=0.25)
    yield engine
    engine.close()
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_model(tiny_engine):
    """A fresh fp32 HF copy of the tiny model (trainer side), synced into `tiny_engine`."""
    from rlvr.trainers.common import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(tiny_engine.model_dir)
    tiny_engine.update_weights(model)
    return model.eval()


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Add seeded noise of `scale` x mean |w| to every parameter (what an optimizer step would do, only larger)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
