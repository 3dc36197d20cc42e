"""Reading task records: local JSONL / JSONL.GZ / JSON / parquet files or a Hugging Face dataset, and turning
them into `Example`s through a field map.

Where a bare data name (`"gsm8k_test"`) is looked up, first match wins:
    1. the explicit `data_dir` argument,
    2. the directory in env `RLVR_DATA_DIR`,
    3. the copy vendored in this package (`tasks/data/`, see SOURCES.md).
so a user directory may override any single file. Each place is tried with the suffixes in `SUFFIXES`.

Every problem with the data is a `DataError` whose one-line message names the file and line (JSONL) or
record/row index (JSON, parquet, HF), and the field when one is missing.
"""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rlvr.errors import DataError

__all__ = ["Row", "FieldMap", "VENDORED_DIR", "SUFFIXES", "GOLD_FORMATS", "data_dirs", "resolve_data_file",
           "read_rows", "load_rows", "rows_to_examples", "last_boxed"]

VENDORED_DIR = Path(__file__).resolve().parent / "data"
SUFFIXES = (".jsonl.gz", ".jsonl", ".json", ".parquet")
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Row:
    """One raw record and where it came from (`path:LINE` or `path:row N`), for error messages."""

    where: str
    data: dict[str, Any]


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for bare data names, highest precedence first."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("RLVR_DATA_DIR"):
        dirs.append(Path(os.environ["RLVR_DATA_DIR"]))
    return dirs + [VENDORED_DIR]


def resolve_data_file(name: str | Path, data_dir: str | Path | None = None) -> Path:
    """A path that exists as given, or `name` (+ a suffix) in the first data dir that has it."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_absolute():
        raise DataError(f"{path}: data file not found")
    tried = []
    for d in data_dirs(data_dir):
        for cand in [d / path] + [d / f"{path}{s}" for s in SUFFIXES if not str(path).endswith(s)]:
            if cand.is_file():
                return cand
        tried.append(str(d))
    raise DataError(f"{name}: data file not found (looked in {', '.join(tried)})")


def read_rows(path: str | Path, *, split: str | None = None) -> list[Row]:
    """All records of one local file (format from its suffix) or of `hf:owner/name[:config]` split `split`."""
    spec = str(path)
    if spec.startswith(HF_PREFIX):
        return _read_hf(spec, split or "train")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    name = path.name.lower()
    reader = next((r for suffix, r in _READERS.items() if name.endswith(suffix)), None)
    if reader is None:
        raise DataError(f"{path}: unsupported data format (use one of {', '.join(_READERS)})")
    try:
        return reader(path)
    except (OSError, EOFError) as e:   # unreadable / truncated gzip, permissions ...
        raise DataError(f"{path}: cannot read ({e})") from None


def load_rows(source: str | Path, *, split: str | None = None, data_dir: str | Path | None = None,
              required: Iterable[str] = ()) -> list[Row]:
    """`read_rows` after data-dir resolution of a bare name; checks each record has the `required` fields."""
    spec = str(source)
    rows = read_rows(spec if spec.startswith(HF_PREFIX) else resolve_data_file(source, data_dir), split=split)
    required = list(required)
    for row in rows:
        for key in required:
            if key not in row.data:
                raise DataError(f"{row.where}: missing field {key!r}")
    return rows


def read_jsonl(path: Path) -> list[Row]:
    """Records of a .jsonl / .jsonl.gz file; a bad line is a DataError naming `path:LINE`."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno + 1}: not UTF-8 ({e.reason})") from None
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            rows.append(_row(f"{path}:{lineno}", rec))
    return rows


def _read_json(path: Path) -> list[Row]:
    """A JSON file holding a list of records (or `{"data": [...]}`)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = f":{e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise DataError(f"{path}{line}: invalid JSON ({getattr(e, 'msg', e)})") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise DataError(f"{path}: expected a list of records, got {type(doc).__name__}")
    return [_row(f"{path}:record {i + 1}", rec) for i, rec in enumerate(doc)]


def _read_parquet(path: Path) -> list[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: invalid parquet ({str(e).splitlines()[0]})") from None
    return [_row(f"{path}:row {i + 1}", rec) for i, rec in enumerate(table.to_pylist())]


def _read_hf(spec: str, split: str) -> list[Row]:
    """`hf:owner/name[:config]` through `datasets.load_dataset` (imported only here: it is optional)."""
    name, _, config = spec[len(HF_PREFIX):].partition(":")
    if not name:
        raise DataError(f"{spec}: expected hf:owner/name[:config]")
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec}: the `datasets` package is not installed (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # network, unknown dataset/split/config: all user-facing
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{spec}: cannot load split {split!r} ({msg})") from None
    return [_row(f"{spec}[{split}]:row {i + 1}", rec) for i, rec in enumerate(ds)]


def _row(where: str, rec: Any) -> Row:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return Row(where, rec)


_READERS: dict[str, Callable[[Path], list[Row]]] = {
    ".jsonl.gz": read_jsonl, ".jsonl": read_jsonl, ".json": _read_json, ".parquet": _read_parquet,
}


# ---- gold answers -------------------------------------------------------------------------------------

def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces matched; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip()
    return None


def _gold_value(value: Any) -> str | None:
    """A field value as a gold string: integral floats as integers (23.0 -> "23"), lists joined by ", "."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value).strip()


def _gold_after_hashes(value: Any) -> str | None:
    """GSM8K style: the text after the last `####`, thousands separators removed."""
    text = str(value)
    return text.rsplit("####", 1)[1].strip().replace(",", "") if "####" in text else None


def _gold_last_boxed(value: Any) -> str | None:
    return last_boxed(str(value))


# How a gold answer is taken out of its field; a function returning None means "not found" (a DataError).
GOLD_FORMATS: dict[str, Callable[[Any], str | None]] = {
    "value": _gold_value,
    "after_hashes": _gold_after_hashes,
    "last_boxed": _gold_last_boxed,
}


@dataclass(frozen=True)
class FieldMap:
    """Which record fields make an Example. `meta` pairs are (meta key, record field)."""

    question: str = "question"
    gold: str | None = "answer"          # None: the task has no reference answer
    gold_format: str = "value"           # a key of GOLD_FORMATS
    id: str | None = None                # None: ids are "<split>/<index>"
    meta: tuple[tuple[str, str], ...] = ()
    skip_no_gold: bool = False           # drop records without a gold answer instead of raising

    def __post_init__(self) -> None:
        if self.gold_format not in GOLD_FORMATS:
            raise ValueError(f"unknown gold_format {self.gold_format!r}; known: {', '.join(GOLD_FORMATS)}")

    @property
    def required(self) -> list[str]:
        return [f for f in (self.question, self.gold, self.id) if f] + [f for _, f in self.meta]


def rows_to_examples(rows: Sequence[Row], fields: FieldMap, *, prefix: str) -> list:
    """Examples with ids `<prefix>/<id field>` (or `<prefix>/<index>`, the record's position in the file).
    A missing field, empty question or (unless `skip_no_gold`) absent gold answer is a DataError."""
    from tasks.base import Example

    extract = GOLD_FORMATS[fields.gold_format]
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in fields.required if f not in row.data]
        if missing:
            raise DataError(f"{row.where}: missing field {missing[0]!r}")
        question = row.data[fields.question]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{row.where}: field {fields.question!r} must be a non-empty string")
        gold = None
        if fields.gold:
            gold = extract(row.data[fields.gold])
            if gold is None or gold == "":
                if fields.skip_no_gold:
                    continue
                raise DataError(f"{row.where}: no gold answer in field {fields.gold!r} "
                                f"(gold_format {fields.gold_format!r})")
        rid = row.data[fields.id] if fields.id else i
        meta = {key: row.data[f] for key, f in fields.meta}
        out.append(Example(id=f"{prefix}/{rid}", question=question, gold=gold, meta=meta))
    return out

