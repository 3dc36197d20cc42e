"""Helpers shared by stage kinds: input rules and turning trainer summaries into flat metrics."""
from __future__ import annotations

from typing import Any


def needs_prompts(spec: Any, where: str) -> None:
    if not spec.prompts:
        raise ValueError(f"{where}: kind {spec.kind} needs `prompts` (a list of sources)")


def needs_data(spec: Any, where: str) -> None:
    if not spec.data:
        raise ValueError(f"{where}: kind {spec.kind} needs `data` (sources, stage outputs or files)")


def scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """The JSON scalars of a trainer summary (lists like `evals` stay in the stage's own summary file)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
