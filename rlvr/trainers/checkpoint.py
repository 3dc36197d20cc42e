"""Atomic, resumable checkpoints: model + optimizer + scheduler + RNG states + trainer state.

Layout: `<run>/checkpoints/step-00000040/` holding `model/` (save_pretrained), `optimizer.pt`,
`scheduler.pt`, `rng.pt`, `state.json`. A checkpoint is written into a temp dir and renamed into place
(rename is atomic on one filesystem), so after `kill -9` at any point a directory named `step-*` is
always complete; stale temp dirs are swept on the next save. Keep-last-N prunes older ones.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + os.replace, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep_last: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)

    def save(self, step: int, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None,
             state: dict[str, Any] | None = None, tokenizer: Any = None, extra: dict[str, Any] | None = None
             ) -> Path:
        """Write one checkpoint atomically. `extra`: more objects for the same checkpoint (e.g. a synced
        reference model's state dict), each torch.save'd as `<name>.pt`; read back with `load_extra`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._sweep_temps()
        final = self.dir / f"{PREFIX}{step:08d}"
        tmp = Path(tempfile.mkdtemp(dir=self.dir, prefix=f".tmp-{PREFIX}{step:08d}-"))
        from rlvr.distributed.lora import save_model   # LoRA: merged weights + the adapters in model/adapter
        save_model(model, tmp / "model", tokenizer=tokenizer)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        for name, obj in (extra or {}).items():
            torch.save(obj, tmp / f"{name}.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **(state or {})}, default=float))
        if final.exists():  # re-saving the same step after a resume: replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        self._prune()
        return final

    def latest(self) -> Checkpoint | None:
        steps = self.list()
        if not steps:
            return None
        path = steps[-1]
        state = json.loads((path / "state.json").read_text())
        return Checkpoint(path=path, step=int(state["step"]), state=state)

    def load_extra(self, ckpt: Checkpoint, name: str) -> Any:
        """An object saved with `save(extra={name: ...})`, or None if this checkpoint has none."""
        path = ckpt.path / f"{name}.pt"
        return torch.load(path, weights_only=False, map_location="cpu") if path.exists() else None

    def list(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.name.startswith(PREFIX) and p.is_dir())

    def restore(self, ckpt: Checkpoint, model: torch.nn.Module, optimizer: Any = None,
                scheduler: Any = None) -> None:
        """Load weights, optimizer, scheduler and RNG states from `ckpt` into live objects."""
        from safetensors.torch import load_file

        from rlvr.distributed.lora import is_peft, load_adapter_weights
        if hasattr(model, "restore_from"):   # a composite model (PPO's ActorCritic) knows its own saved layout
            model.restore_from(ckpt.path / "model")
            self._restore_states(ckpt, optimizer, scheduler)
            return
        if is_peft(model):   # only the adapters train; the base weights are the ones the model was built from
            load_adapter_weights(model, ckpt.path / "model")
            self._restore_states(ckpt, optimizer, scheduler)
            return
        weights = {}
        for f in sorted((ckpt.path / "model").glob("*.safetensors")):
            weights.update(load_file(f))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # Tied weights (lm_head = embed) are saved once; anything else missing is a real problem.
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {ckpt.path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self._restore_states(ckpt, optimizer, scheduler)

    def _restore_states(self, ckpt: Checkpoint, optimizer: Any, scheduler: Any) -> None:
        if optimizer is not None and (ckpt.path / "optimizer.pt").exists():
            optimizer.load_state_dict(torch.load(ckpt.path / "optimizer.pt", weights_only=False))
        if scheduler is not None and (ckpt.path / "scheduler.pt").exists():
            scheduler.load_state_dict(torch.load(ckpt.path / "scheduler.pt", weights_only=False))
        if (ckpt.path / "rng.pt").exists():   # a DeepSpeed checkpoint keeps one rng-<rank>.pt per rank instead
            set_rng_state(torch.load(ckpt.path / "rng.pt", weights_only=False))

    def _prune(self) -> None:
        for old in self.list()[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def _sweep_temps(self) -> None:
        for p in self.dir.glob(f".tmp-{PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)
