"""Task registry: `@register_task` factories, YAML task files, and the `rlvr.tasks` entry-point group.

Factories are called lazily (building a task may read data), so `list_tasks()` stays fast.
"""
from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from tasks.base import Task

_FACTORIES: dict[str, tuple[Callable[[], Task], str]] = {}   # name -> (factory, source)
_BUILT: dict[str, Task] = {}
_LOADED = False
YAML_DIR = Path(__file__).parent / "yaml"


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want a plain line
        return self.args[0]


def register_task(name: str, *, source: str = "builtin"):
    """Decorator for a zero-argument function (or class) that returns a Task. A duplicate name raises."""

    def deco(factory):
        if name in _FACTORIES:
            raise ValueError(f"task {name!r} is already registered (by {_FACTORIES[name][1]})")
        _FACTORIES[name] = (factory, source)
        return factory

    return deco


def get_task(name: str, **options) -> Task:
    """Return the task `name` (built with `options`, e.g. difficulty knobs), or load a YAML task file
    when `name` is a path to one. Tasks built without options are cached."""
    if name.endswith((".yaml", ".yml")) and Path(name).exists():
        from tasks.yaml_task import load_yaml_task
        return load_yaml_task(Path(name), **options)
    _load_all()
    if name not in _FACTORIES:
        raise UnknownTaskError(f"unknown task {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    factory, source = _FACTORIES[name]
    if options:
        try:
            task = factory(**options)
        except TypeError as e:
            raise ValueError(f"bad options for task {name!r}: {e}") from None
        task.source = source
        return task
    if name not in _BUILT:
        task = factory()
        task.source = source
        _BUILT[name] = task
    return _BUILT[name]


def list_tasks() -> list[str]:
    _load_all()
    return sorted(_FACTORIES)


def task_source(name: str) -> str:
    _load_all()
    return _FACTORIES[name][1]


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import tasks.builtin  # noqa: F401  (registers the built-ins)
    from tasks.yaml_task import register_yaml_dir

    register_yaml_dir(YAML_DIR, source="builtin-yaml")
    for extra in filter(None, os.environ.get("RLVR_TASK_PATH", "").split(os.pathsep)):
        register_yaml_dir(Path(extra), source=f"yaml:{extra}")
    for ep in entry_points(group="rlvr.tasks"):
        try:
            obj = ep.load()
        except Exception as e:  # a broken third-party plugin must not take the registry down
            print(f"warning: entry point {ep.name!r} ({ep.value}) failed to load: {e}")
            continue
        if ep.name not in _FACTORIES and callable(obj):
            _FACTORIES[ep.name] = (obj, f"entry-point:{ep.value}")
