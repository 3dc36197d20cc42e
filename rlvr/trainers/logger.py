"""One metric sink for every trainer: JSONL (source of truth), TensorBoard, and a rich progress bar.

Metric names follow one vocabulary across trainers (`loss/policy`, `loss/kl`, `loss/clipfrac`,
`reward/<verifier>`, `verify/timeouts`, `perf/tokens_per_s`, `time/generate_s`, ...).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after kill -9: drop it
                break
    return rows


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, name: str = "train", total_steps: int | None = None,
                 resume_step: int | None = None, tensorboard: bool = True, progress: bool = True,
                 show_keys: Iterable[str] = ()):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{name}_metrics.jsonl"
        # On resume, drop rows logged after the checkpoint we restart from, so the log equals an
        # uninterrupted run's log.
        keep = [r for r in read_jsonl(self.path) if resume_step is not None and r.get("step", 0) <= resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)
        self.rows = keep
        self._fh = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.dir / "tb" / name))
            except Exception:  # tensorboard missing is not worth failing a run over
                self._tb = None
        self.show_keys = list(show_keys)
        self._progress = None
        if progress and total_steps:
            self._progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[info]}"), transient=False)
            self._task = self._progress.add_task(name, total=total_steps, completed=resume_step or 0, info="")
            self._progress.start()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self.rows.append(row)
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self._progress is not None:
            info = "  ".join(f"{k.split('/')[-1]}={row[k]:.3g}" for k in self.show_keys
                             if isinstance(row.get(k), (int, float)))
            self._progress.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._fh.close()


class NullLogger:
    """What non-main ranks log through in a multi-process run: nothing (rank 0 writes the merged metrics)."""

    rows: list = []

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def rank_logger(out_dir: str | Path, **kwargs: Any) -> "MetricsLogger | NullLogger":
    """A MetricsLogger on the main process, a NullLogger on the other ranks."""
    from rlvr.distributed.context import context
    return MetricsLogger(out_dir, **kwargs) if context().is_main else NullLogger()


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v
