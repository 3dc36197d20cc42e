"""Atomic checkpoints: complete or absent, keep-last-N, temp dirs swept, RNG states restored."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rlvr.trainers.checkpoint import CheckpointManager, atomic_write_json, seed_everything


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)

    def save_pretrained(self, path, safe_serialization=True):
        from safetensors.torch import save_file
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(path / "model.safetensors"))


def test_save_restore_roundtrip_with_rng(tmp_path):
    seed_everything(1)
    m = Tiny()
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(5, m, opt, state={"cursor": 17})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    w = m.lin.weight.detach().clone()

    m2 = Tiny()
    opt2 = torch.optim.AdamW(m2.parameters(), lr=0.1)
    seed_everything(999)
    ck = mgr.latest()
    assert ck.step == 5 and ck.state["cursor"] == 17
    mgr.restore(ck, m2, opt2)
    assert torch.equal(m2.lin.weight, w)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_keep_last_and_temp_sweep(tmp_path):
    m = Tiny()
    mgr = CheckpointManager(tmp_path, keep_last=2)
    (mgr.dir / ".tmp-step-00000009-abc").mkdir(parents=True)      # a torn save from a killed run
    for step in (1, 2, 3):
        mgr.save(step, m)
    assert [p.name for p in mgr.list()] == ["step-00000002", "step-00000003"]
    assert not list(mgr.dir.glob(".tmp-*"))
    assert mgr.latest().step == 3


def test_torn_checkpoint_is_invisible(tmp_path):
    m = Tiny()
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, m)
    (mgr.dir / ".tmp-step-00000002-xyz" / "model").mkdir(parents=True)   # crash mid-write
    assert mgr.latest().step == 1


def test_atomic_write_json_never_leaves_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"a": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(path, {"a": 2})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
