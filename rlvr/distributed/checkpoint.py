"""Checkpoints under DeepSpeed ZeRO with the same atomicity as `CheckpointManager`.

Layout of `<run>/checkpoints/step-00000040/`:
    deepspeed/        DeepSpeed's own sharded states (`engine.save_checkpoint`): per-rank optimizer partitions
                      (ZeRO-1/2) or parameter + optimizer partitions (ZeRO-3); resuming needs the same world size
    model/            consolidated HF weights (save_pretrained on rank 0; ZeRO-3 gathers them first)
    scheduler.pt, rng-<rank>.pt, state.json
All ranks write into one temp dir `.tmp-step-XXXXXXXX-ds` (same name on every rank); after a barrier rank 0
renames it into place, so a `step-*` directory is complete or absent, as in the single-process manager.
Single-node or shared-filesystem runs are assumed (every rank sees the same `<run>/checkpoints`).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from rlvr.trainers.checkpoint import PREFIX, Checkpoint, CheckpointManager, rng_state, set_rng_state

__all__ = ["DeepSpeedCheckpointManager"]

TAG = "deepspeed"


class DeepSpeedCheckpointManager(CheckpointManager):
    def __init__(self, run_dir: str | Path, keep_last: int = 2, *, trainable: Any):
        super().__init__(run_dir, keep_last)
        self.tr = trainable

    def save(self, step: int, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None,
             state: dict[str, Any] | None = None, tokenizer: Any = None, extra: dict[str, Any] | None = None
             ) -> Path:
        from rlvr.distributed.lora import save_model

        ctx, engine = self.tr.ctx, self.tr.engine
        final = self.dir / f"{PREFIX}{step:08d}"
        tmp = self.dir / f".tmp-{PREFIX}{step:08d}-ds"
        if ctx.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._sweep_temps()
            tmp.mkdir()
        ctx.barrier()
        engine.save_checkpoint(str(tmp), tag=TAG, save_latest=False)        # collective: every rank writes shards
        torch.save(rng_state(), tmp / f"rng-{ctx.rank}.pt")
        with gathered_params(self.tr):                                      # ZeRO-3: full weights on every rank
            if ctx.is_main:
                save_model(self.tr.module, tmp / "model", tokenizer=tokenizer)
        if ctx.is_main:
            if scheduler is not None:
                torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            for name, obj in (extra or {}).items():
                torch.save(obj, tmp / f"{name}.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": ctx.world_size, **(state or {})},
                                                       default=float))
        ctx.barrier()                                                       # every rank's files are in tmp
        if ctx.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            self._prune()
        ctx.barrier()
        return final

    def restore(self, ckpt: Checkpoint, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None) -> None:
        ctx = self.tr.ctx
        saved = ckpt.state.get("world_size", 1)
        if not (ckpt.path / TAG).is_dir():
            raise RuntimeError(f"checkpoint {ckpt.path}: no DeepSpeed states (written without distributed.deepspeed)")
        if saved != ctx.world_size:
            raise RuntimeError(f"checkpoint {ckpt.path}: written by {saved} ranks, resuming with {ctx.world_size}; "
                               "resume with the same number of processes")
        self.tr.engine.load_checkpoint(str(ckpt.path), tag=TAG, load_optimizer_states=True,
                                       load_lr_scheduler_states=False)
        if scheduler is not None and (ckpt.path / "scheduler.pt").exists():
            scheduler.load_state_dict(torch.load(ckpt.path / "scheduler.pt", weights_only=False))
        set_rng_state(torch.load(ckpt.path / f"rng-{ctx.rank}.pt", weights_only=False))


class gathered_params:
    """Context: under ZeRO-3 gather the full parameters on every rank (read-only); a no-op below stage 3."""

    def __init__(self, trainable: Any):
        self.tr, self._ctx = trainable, None

    def __enter__(self):
        if getattr(self.tr, "zero_stage", 0) == 3:
            import deepspeed
            self._ctx = deepspeed.zero.GatheredParameters(list(self.tr.module.parameters()), modifier_rank=None)
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False
