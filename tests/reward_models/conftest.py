"""Fixtures for the reward-model / PRM tests: a small backbone, a trained PRM and RM shared by the session.

Torch runs on ONE thread here: on a shared, oversubscribed CPU two OpenMP threads spin against each other and a
tiny training step gets ~10-20x slower (measured 1.75 s vs 0.09 s per PRM step).
"""
from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
import torch

PRM_STEPS = 900      # step AUC 0.957 at 900, 0.857 at 600 (tiny model v2 init; v1 cleared 0.9 at 600)


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def small_lm(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide char-level Llama (the tiny model's tokenizer), built locally."""
    from rlvr.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("lm") / "small", hidden=64, layers=2, heads=4,
                            intermediate=128, max_positions=128)


@pytest.fixture(scope="session")
def trained_prm(small_lm, tmp_path_factory):
    """A PRM trained on synthetic arithmetic chains (result errors, values 0..5): (summary, output dir)."""
    from rlvr.trainers.prm import PRMConfig, SyntheticConfig, train_prm

    out = tmp_path_factory.mktemp("prm")
    cfg = PRMConfig(model=str(small_lm), synthetic=SyntheticConfig(n=3000, max_value=5, errors="result"),
                    output_dir=str(out), max_steps=PRM_STEPS, batch_size=32, micro_batch=32, lr=2e-3,
                    schedule="cosine", warmup_steps=30,
                    eval_every=0, checkpoint_every=0, max_length=64, bf16=False, eval_fraction=0.1)
    with one_thread():
        return train_prm(cfg, log_fn=lambda s: None), out


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """Pairs where the chosen reply is polite and the rejected one rude (a feature a tiny RM learns fast)."""
    rng = random.Random(seed)
    polite, rude = ["thanks!", "glad to help.", "you are welcome."], ["go away.", "no.", "whatever."]
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        prompt = f"q: what is {a}+{b}?\na: "
        rows.append({"prompt": prompt, "chosen": f"{a + b}. {rng.choice(polite)}",
                     "rejected": f"{a + b}. {rng.choice(rude)}"})
    return rows


@pytest.fixture(scope="session")
def trained_rm(small_lm, tmp_path_factory):
    """A reward model trained on `preference_rows`: (summary, output dir)."""
    import json

    from rlvr.trainers.reward_model import RMConfig, train_reward_model

    out = tmp_path_factory.mktemp("rm")
    data = out / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(400)))
    cfg = RMConfig(model=str(small_lm), data=[str(data)], output_dir=str(out / "run"), max_steps=40,
                   batch_size=16, micro_batch=16, lr=3e-3, eval_every=0, checkpoint_every=0, max_length=64,
                   bf16=False, eval_fraction=0.2)
    with one_thread():
        return train_reward_model(cfg, log_fn=lambda s: None), out / "run"
