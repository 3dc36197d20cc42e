"""Typed configs loaded from YAML with dotted CLI overrides (`trainer.lr=1e-5`).

Each component owns one pydantic model (`extra="forbid"`, so an unknown key is an error that names it).
`load_config(Model, path, overrides)` returns a validated instance or raises ConfigError with one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rlvr.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Config(BaseModel):
    """Base for every config section: unknown keys are errors; fields validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a","b","c"], VALUE parsed as YAML so numbers/bools/lists get their types)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, _, raw = item.partition("=")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], *, where: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"{where}: unknown key {key!r}"
        elif not err["loc"]:  # a cross-field check: its message says it all; the input is the whole file
            msg = f"{where}: {err['msg'].removeprefix('Value error, ')}"
        else:
            got = repr(err.get("input"))
            msg = f"{where}: {key}: {err['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"
        more = len(e.errors()) - 1
        raise ConfigError(msg + (f" (+{more} more)" if more else "")) from None


def load_config(model: type[M], path: str | Path | None, overrides: Sequence[str] = ()) -> M:
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return validate(model, data, where=str(path) if path is not None else "config")
