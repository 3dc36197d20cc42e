"""The scale-out seam in one process: config completion, single-process defaults, strided prompt shards,
equal micro-batch counts, gradient checkpointing."""
from __future__ import annotations

import json

import pytest
import torch

from rlvr.distributed import DistributedConfig, context, prepare, shard
from rlvr.distributed.context import DistContext
from rlvr.distributed.trainable import PlainTrainable, complete_deepspeed_config
from rlvr.errors import ConfigError
from rlvr.trainers.grpo import PromptStream


def test_single_process_context_is_a_no_op():
    ctx = context()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert ctx.all_sum(7) == 7 and ctx.all_max(3) == 3 and ctx.broadcast_object({"a": 1}) == {"a": 1}
    assert ctx.reduce_metrics({"loss": 2.0}, sum_keys=("loss",)) == {"loss": 2.0}
    assert [(s.start, s.stop) for s in ctx.micro_batches(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert shard(list(range(5)), ctx) == [0, 1, 2, 3, 4]


def test_strided_shards_partition_the_batch():
    items = list(range(7))
    parts = [shard(items, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]


def test_rank_prompt_streams_interleave_the_global_order():
    whole = PromptStream(10, seed=5).take(12)
    r0, r1 = PromptStream(10, seed=5, rank=0, world=2), PromptStream(10, seed=5, rank=1, world=2)
    a, b = r0.take(6), r1.take(6)
    assert [x for pair in zip(a, b) for x in pair] == whole
    resumed = PromptStream(10, seed=5, cursor=3, rank=1, world=2)
    assert resumed.take(3) == b[3:]


def test_deepspeed_config_completion(tmp_path):
    base = json.loads(open("recipes/deepspeed/zero2.json").read())
    ds = complete_deepspeed_config(base, grad_clip=0.5, bf16=True)
    assert ds["gradient_accumulation_steps"] == 1 and ds["managed_gradient_accumulation"] is False
    assert ds["gradient_clipping"] == 0.5 and ds["train_micro_batch_size_per_gpu"] == 1
    assert ds["bf16"]["enabled"] is torch.cuda.is_available()       # "auto": bf16 weights only on CUDA
    assert complete_deepspeed_config(base, grad_clip=None, bf16=False)["gradient_clipping"] == 0.0
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        complete_deepspeed_config({**base, "gradient_accumulation_steps": 4}, grad_clip=1.0, bf16=False)
    with pytest.raises(ConfigError, match="optimizer"):
        complete_deepspeed_config({**base, "optimizer": {"type": "Adam"}}, grad_clip=1.0, bf16=False)
    with pytest.raises(Exception, match="not found"):
        DistributedConfig(deepspeed=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  \"zero_optimization\": {\n}")
    from rlvr.distributed.config import read_deepspeed_config
    with pytest.raises(ConfigError, match=r"bad.json:3"):
        read_deepspeed_config(str(bad))


def test_plain_trainable_and_gradient_checkpointing_give_the_same_step():
    from rlvr.trainers.common import build_optimizer, load_model_and_tokenizer

    ids = torch.randint(4, 70, (3, 16), generator=torch.Generator().manual_seed(0))
    out = []
    for ckpt in (False, True):
        model, _ = load_model_and_tokenizer("tiny")
        tr = prepare(model, build_optimizer(model, 1e-2), DistributedConfig(gradient_checkpointing=ckpt),
                     grad_clip=1.0)
        assert isinstance(tr, PlainTrainable) and model.is_gradient_checkpointing == ckpt
        model.train()
        tr.backward(model(input_ids=ids, labels=ids).loss)
        norm = tr.step()
        assert all(p.grad is None for p in model.parameters())            # step() zeroes the gradients
        out.append((norm, {k: v.clone() for k, v in model.state_dict().items()}))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)                # recomputation is exact
    for k in out[0][1]:
        torch.testing.assert_close(out[0][1][k], out[1][1][k], rtol=0, atol=1e-6)


def test_each_rank_removes_its_own_deepspeed_shm_buffer_at_exit(tmp_path, monkeypatch):
    """DeepSpeed's CPU allreduce never unlinks its ~67 MB /dev/shm buffers; a rank removes its own (this launch's
    address and port, its rank) and nothing else."""
    from rlvr.distributed.context import remove_shm_buffers

    names = ["deepspeed_allreduce_buffer_0_127.0.0.1_29511_0", "deepspeed_allreduce_buffer_0_127.0.0.1_29511_1",
             "deepspeed_allreduce_buffer_0_127.0.0.1_29512_0", "unrelated_0_127.0.0.1_29511_0"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert remove_shm_buffers(0, str(tmp_path)) == [str(tmp_path / names[0])]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    monkeypatch.delenv("MASTER_PORT")
    assert remove_shm_buffers(1, str(tmp_path)) == []


def test_stale_extension_build_locks_are_removed_fresh_ones_kept(tmp_path, monkeypatch):
    """A process killed while building DeepSpeed's CPU comm op leaves torch's build lock; later starts would wait
    on it forever. Old locks go, a lock a build may still hold stays."""
    import os
    import time

    from rlvr.distributed.context import remove_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    stale, fresh = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "other" / "lock"
    for p in (stale, fresh):
        p.parent.mkdir(parents=True)
        p.touch()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert remove_stale_build_locks(max_age_s=600) == [str(stale)]
    assert not stale.exists() and fresh.exists()
    assert remove_stale_build_locks(max_age_s=600) == []
