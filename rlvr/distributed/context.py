"""Who am I in a multi-process run, and the few collectives the trainers need.

`context()` returns the process's `DistContext`. Without a launcher (no WORLD_SIZE > 1 in the environment) it is
the single-process context: rank 0 of 1, every collective a no-op, so trainers run unchanged. Under `deepspeed`
or `torchrun` (which set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT) the first call joins the
process group: NCCL on CUDA (one GPU per local rank), gloo on CPU.

Data-parallel convention used by every trainer (see docs/scaling.md):
- a rank's loss is *its share of the global loss*: per-token/per-sequence means divide by the global count
  (`all_sum` of the local counts), so summing the ranks' losses gives exactly the single-process loss;
- gradients are summed across ranks (`rlvr.distributed.trainable` undoes DeepSpeed's 1/world averaging);
- GRPO groups never straddle ranks: a rank samples whole groups, so group advantages are computed locally.
"""
from __future__ import annotations

import atexit
import contextlib
import glob
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

__all__ = ["DistContext", "context", "even_slices", "resolve_device", "shard"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        """Where this rank's models and batches live: its local GPU when CUDA is available, else the CPU.
        `RLVR_DEVICE=cpu` (or any torch device string) overrides it, e.g. to train on the CPU of a GPU box."""
        return resolve_device(self.local_rank)

    # ------------------------------------------------------------------------------------------- collectives
    def all_sum(self, value: float | int) -> float | int:
        """Σ_ranks value (a Python number; ints stay ints)."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        torch.distributed.all_reduce(t)
        return int(round(t.item())) if isinstance(value, int) else t.item()

    def all_max(self, value: int) -> int:
        if not self.distributed:
            return value
        t = torch.tensor([int(value)], dtype=torch.int64, device=self._comm_device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank (e.g. an eval score only rank 0 computes)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=src)
        return box[0]

    @property
    def _comm_device(self) -> torch.device:
        # NCCL reduces only GPU tensors, gloo only CPU ones.
        nccl = torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"
        return torch.device("cuda", self.local_rank) if nccl else torch.device("cpu")

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def reduce_metrics(self, metrics: dict[str, Any], sum_keys: Iterable[str] = ()) -> dict[str, Any]:
        """Metrics of all ranks merged: keys in `sum_keys` (shares of a global total: loss shares, token and
        group counts, throughput) are summed, every other numeric key averaged; non-numeric values are rank 0's."""
        if not self.distributed:
            return metrics
        keys = sorted(k for k, v in metrics.items() if _is_number(v))
        vals = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        torch.distributed.all_reduce(vals)
        sums = set(sum_keys)
        out = dict(metrics)
        for k, v in zip(keys, vals.tolist()):
            out[k] = v if k in sums else v / self.world_size
        return out

    def micro_batches(self, n: int, size: int) -> Iterator[slice]:
        """Slices over this rank's n rows; every rank gets the same number of slices.

        ZeRO-2/3 reduce gradients inside every backward (a collective), so all ranks must run the same number of
        backward passes per optimizer step even when their row counts differ (dynamic sampling). The count is
        max over ranks of ceil(n / size); rows are spread evenly, and a rank can get empty slices (its caller runs
        a zero-loss backward for those, see Trainable.backward_nothing). Single process: plain `size` chunks.
        """
        k = self.all_max(math.ceil(n / max(1, size))) if self.distributed else math.ceil(n / max(1, size))
        if not self.distributed:
            for start in range(0, n, max(1, size)):
                yield slice(start, min(n, start + size))
            return
        yield from even_slices(n, k)


def even_slices(n: int, k: int) -> list[slice]:
    """n rows split in order into k slices whose sizes differ by at most one (some empty when n < k)."""
    base, extra = divmod(n, max(1, k))
    bounds = [0]
    for i in range(k):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def resolve_device(local_rank: int = 0) -> torch.device:
    """`RLVR_DEVICE` if set, else cuda:<local_rank> when CUDA is available, else cpu."""
    if os.environ.get("RLVR_DEVICE"):
        return torch.device(os.environ["RLVR_DEVICE"])
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def remove_shm_buffers(rank: int, shm_dir: str = "/dev/shm") -> list[str]:
    """Remove this rank's DeepSpeed CPU allreduce buffer (`deepspeed_allreduce_buffer_*_<addr>_<port>_<rank>`,
    ~67 MB of /dev/shm that DeepSpeed never unlinks: every CPU launch leaked 2 of them, 12 GB here after a day
    of tests). Runs at exit; mappings other ranks still hold stay valid after the unlink. Returns what went."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not (addr and port):
        return []
    gone = []
    for path in glob.glob(os.path.join(shm_dir, f"deepspeed_allreduce_buffer_*_{addr}_{port}_{rank}")):
        with contextlib.suppress(OSError):
            os.unlink(path)
            gone.append(path)
    return gone


def remove_stale_build_locks(max_age_s: float = 600.0) -> list[str]:
    """Remove stale `lock` files of torch's JIT extension builds (`$TORCH_EXTENSIONS_DIR`, else
    ~/.cache/torch_extensions). DeepSpeed builds its CPU shared-memory comm op that way on first use; the build
    holds `<build dir>/lock` for ~1 min, and a process killed meanwhile leaves the file behind, after which every
    later DeepSpeed start waits on it forever. A lock older than `max_age_s` is treated as stale. Returns what
    went."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.expanduser("~/.cache/torch_extensions")
    gone = []
    for path in glob.glob(os.path.join(root, "*", "*", "lock")) + glob.glob(os.path.join(root, "*", "lock")):
        with contextlib.suppress(OSError):
            if time.time() - os.path.getmtime(path) > max_age_s:
                os.unlink(path)
                gone.append(path)
                print(f"rlvr: removed a stale torch extension build lock {path} (left by a killed build)",
                      file=sys.stderr)
    return gone


def shard(items: list, ctx: DistContext) -> list:
    """This rank's strided share items[rank::world] (all items on a single process)."""
    return items[ctx.rank::ctx.world_size]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.numel() == 1)


_CONTEXT: DistContext | None = None


def context() -> DistContext:
    """The process's DistContext; joins the process group on first use when launched with WORLD_SIZE > 1."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CONTEXT = DistContext()
        return _CONTEXT
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        cuda = resolve_device(local).type == "cuda"
        remove_stale_build_locks()      # DeepSpeed JIT-builds ops (CPU comm, fused optimizers) on either device
        if cuda:
            torch.cuda.set_device(local)
        else:
            atexit.register(remove_shm_buffers, rank)
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world)
    _CONTEXT = DistContext(rank=rank, world_size=world, local_rank=local)
    return _CONTEXT
