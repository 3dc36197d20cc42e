"""Tasks declared in YAML files: data + field map + prompt template + weighted verifiers, no Python.

    name: gsm8k_int
    description: GSM8K with exact integer checking
    data: {train: gsm8k_train, test: gsm8k_test}   # or one source: `data: my.jsonl` (+ `splits: [test]`)
                                                   # (`splits: {train: a, test: b}` without `data` works too)
    fields: {question: question, gold: answer, gold_format: after_hashes, id: null, meta: [subject]}
    template: {system: ..., user: "{question}\\n...", assistant_prefix: "", plain: ..., chat: true}
    verifiers: [{name: integer, weight: 1.0, options: {pick: last}}]
    primary: integer                                 # optional; default: the first verifier

A data source is `hf:owner/name[:config]` (the split name goes to `datasets`), an absolute path, a path
relative to the YAML file, or a bare name looked up in the data dirs (`tasks.data.data_dirs`). A local file
serves one split. Template strings use `str.format`: `{question}` and meta fields; write a literal brace as
`{{` / `}}` (so `\\boxed{{}}`). `fields.meta` is a list of field names or a {meta key: field} mapping.
Every mistake is a ConfigError/DataError naming the file and the key.
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from pydantic import Field

from rlvr.config import Config, read_yaml, validate
from rlvr.errors import ConfigError, DataError
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from tasks.data import GOLD_FORMATS, HF_PREFIX, FieldMap, load_rows, resolve_data_file, rows_to_examples
from tasks.registry import register_task
from verifiers.base import get_verifier

__all__ = ["YamlTaskSpec", "load_yaml_task", "register_yaml_dir"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class FieldsSpec(Config):
    question: str = "question"                      # record field holding the problem text
    gold: str | None = "answer"                     # record field holding the reference answer (null: none)
    gold_format: str = "value"                      # how the gold is taken from its field: see GOLD_FORMATS
    id: str | None = None                           # record field used as id (null: "<split>/<index>")
    meta: list[str] | dict[str, str] = Field(default_factory=list)  # extra fields kept in Example.meta
    skip_no_gold: bool = False                      # drop records without a gold answer instead of failing


class TemplateSpec(Config):
    """Unset keys keep the PromptTemplate defaults."""

    user: str | None = None
    system: str | None = None
    assistant_prefix: str | None = None
    plain: str | None = None
    chat: bool | None = None


class VerifierSpec(Config):
    name: str                                       # a registered verifier (see `verifiers.base`)
    weight: float = 1.0                             # reward = sum of weight * verifier reward
    options: dict[str, Any] = Field(default_factory=dict)  # keyword options of the verifier


class YamlTaskSpec(Config):
    name: str                                       # registry name
    description: str = ""
    data: str | dict[str, str] | None = None        # one source, or {split: source}
    splits: list[str] | dict[str, str] | None = None  # with one source: its split names (default [test]);
                                                    # or, instead of `data`, the {split: source} mapping
    fields: FieldsSpec = Field(default_factory=FieldsSpec)
    template: TemplateSpec = Field(default_factory=TemplateSpec)
    verifiers: list[VerifierSpec] = Field(min_length=1)
    primary: str | None = None                      # verifier deciding correctness (default: the first)


def load_yaml_task(path: str | Path, **options: Any) -> Task:
    """Build the Task described by `path`; `options` override top-level keys of the file."""
    path = Path(path)
    spec = validate(YamlTaskSpec, {**read_yaml(path), **options}, where=str(path))
    _check_name(spec.name, path)
    sources = _split_sources(spec, path)
    fields = _field_map(spec.fields, path)
    template = _template(spec.template, fields, path)
    verifiers = []
    for i, v in enumerate(spec.verifiers):
        try:
            verifiers.append(WeightedVerifier(get_verifier(v.name, **v.options), v.weight))
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{path}: verifiers.{i}: {e.args[0] if e.args else e}") from None

    def loader(split: str, limit: int | None) -> list[Example]:
        rows = load_rows(_resolve(sources[split], path), split=split)
        return rows_to_examples(rows, fields, prefix=spec.name if fields.id else f"{spec.name}/{split}")

    try:
        return Task(name=spec.name, loader=loader, verifiers=verifiers, template=template,
                    primary=spec.primary, splits=tuple(sources), description=spec.description,
                    source=f"yaml:{path}")
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def register_yaml_dir(directory: str | Path, source: str) -> list[str]:
    """Register every `*.yaml`/`*.yml` in `directory` under its `name` (built lazily); returns the names."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: task directory not found")
    names = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        name = read_yaml(path).get("name")
        _check_name(name, path)
        try:
            register_task(name, source=source)(_YamlFactory(path))
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
        names.append(name)
    return names


class _YamlFactory:
    """Registry factory for one file: builds (and validates) the task only when it is asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, **options: Any) -> Task:
        return load_yaml_task(self.path, **options)


def _check_name(name: Any, path: Path) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{path}: name: expected a task name of letters, digits, '_', '.', '-' (got {name!r})")


def _split_sources(spec: YamlTaskSpec, path: Path) -> dict[str, str]:
    if isinstance(spec.splits, dict):
        if spec.data is not None:
            raise ConfigError(f"{path}: splits: give the {{split: source}} mapping either as data or as splits")
        if not spec.splits:
            raise ConfigError(f"{path}: splits: the split mapping is empty")
        return dict(spec.splits)
    if spec.data is None:
        raise ConfigError(f"{path}: data: missing (a source, or a {{split: source}} mapping)")
    if isinstance(spec.data, dict):
        if not spec.data:
            raise ConfigError(f"{path}: data: the split mapping is empty")
        if spec.splits is not None and list(spec.splits) != list(spec.data):
            raise ConfigError(f"{path}: splits: {spec.splits} disagrees with the keys of data ({list(spec.data)})")
        return dict(spec.data)
    splits = spec.splits or ["test"]
    if len(splits) > 1 and not spec.data.startswith(HF_PREFIX):
        raise ConfigError(f"{path}: splits: a local file serves one split; give data as {{split: file}}")
    return {s: spec.data for s in splits}


def _resolve(source: str, yaml_path: Path) -> str | Path:
    """hf: specs as they are; local paths relative to the YAML file first, then in the data dirs."""
    if source.startswith(HF_PREFIX):
        return source
    local = yaml_path.parent / Path(source).expanduser()
    if local.is_file():
        return local
    try:
        return resolve_data_file(source)
    except DataError as e:
        raise DataError(f"{yaml_path}: data: {e} (nor relative to {yaml_path.parent})") from None


def _field_map(spec: FieldsSpec, path: Path) -> FieldMap:
    if spec.gold_format not in GOLD_FORMATS:
        raise ConfigError(f"{path}: fields.gold_format: {spec.gold_format!r} is not one of "
                          f"{', '.join(GOLD_FORMATS)}")
    meta = spec.meta if isinstance(spec.meta, dict) else {f: f for f in spec.meta}
    return FieldMap(spec.question, spec.gold, spec.gold_format, spec.id, tuple(meta.items()), spec.skip_no_gold)


def _template(spec: TemplateSpec, fields: FieldMap, path: Path) -> PromptTemplate:
    template = PromptTemplate(**spec.model_dump(exclude_none=True))
    allowed = {"user": {"question", *(k for k, _ in fields.meta)}, "plain": {"system", "user"}}
    for key, names in allowed.items():
        text = getattr(template, key)
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as e:
            raise ConfigError(f"{path}: template.{key}: {e} (write literal braces as {{{{ and }}}})") from None
        unknown = sorted(f for f in used if f.split(".")[0].split("[")[0] not in names)
        if unknown:
            raise ConfigError(f"{path}: template.{key}: unknown field {{{unknown[0]}}} "
                              f"(available: {', '.join(sorted(names))}; write a literal brace as {{{{)")
    return template
