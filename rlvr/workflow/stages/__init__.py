"""Stage kinds of a multi-stage run. One module per kind registers itself with `@register_stage(...)`;
the runner only looks kinds up by name.

A kind is a config class (validated from the stage's `config:` mapping), a `run(ctx, cfg) -> StageResult`
function, and `check(spec, where)` rules about which inputs it needs (raised as config errors at load time).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from rlvr.config import Config

__all__ = ["StageKind", "StageResult", "register_stage", "get_stage_kind", "list_stage_kinds"]


@dataclass
class StageResult:
    """What a stage leaves behind: scalar metrics, a model dir (or None) and named dataset files."""

    metrics: dict[str, Any] = field(default_factory=dict)
    model_dir: str | None = None
    datasets: dict[str, str] = field(default_factory=dict)


def _no_check(spec: Any, where: str) -> None:
    return None


@dataclass(frozen=True)
class StageKind:
    name: str
    config_cls: type[Config]
    run: Callable[..., StageResult]
    check: Callable[[Any, str], None] = _no_check
    produces_model: bool = True
    collective: bool = False        # runs on every rank of a distributed launch (else rank 0 only)
    doc: str = ""


_KINDS: dict[str, StageKind] = {}


def register_stage(name: str, config_cls: type[Config], *, check: Callable[[Any, str], None] = _no_check,
                   produces_model: bool = True, collective: bool = False):
    def deco(fn: Callable[..., StageResult]) -> Callable[..., StageResult]:
        _KINDS[name] = StageKind(name, config_cls, fn, check, produces_model, collective,
                                 (fn.__doc__ or "").strip())
        return fn
    return deco


_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def get_stage_kind(name: str, *, where: str = "stage") -> StageKind:
    _load_all()
    if name not in _KINDS:
        raise ValueError(f"{where}: unknown stage kind {name!r} (kinds: {', '.join(sorted(_KINDS))})")
    return _KINDS[name]


def list_stage_kinds() -> list[str]:
    _load_all()
    return sorted(_KINDS)
