"""tasks.data: file formats, data-dir resolution, gold extraction and one-line errors naming file/line/field."""
from __future__ import annotations

import gzip
import json
import sys

import pytest

from rlvr.errors import DataError
from tasks.data import (FieldMap, VENDORED_DIR, data_dirs, last_boxed, load_rows, read_rows, resolve_data_file,
                        rows_to_examples)

RECORDS = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "x\n#### 4"}]


def _write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json", "parquet"])
def test_every_format_reads_the_same_records(tmp_path, fmt):
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        _write_jsonl(path, RECORDS)
    elif fmt == "jsonl.gz":
        _write_jsonl(path, RECORDS, gzip.open)
    elif fmt == "json":
        path.write_text(json.dumps(RECORDS))
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    rows = read_rows(path)
    assert [r.data for r in rows] == RECORDS
    assert rows[1].where.startswith(str(path))


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b"}\n')
    rows = read_rows(path)
    assert [r.where for r in rows] == [f"{path}:1", f"{path}:3"]
    with pytest.raises(DataError, match=rf"^{path}:3: missing field 'answer'$"):
        load_rows(path, required=["question", "answer"])


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "answer": "1"}\n{"question": oops}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON \("):
        read_rows(path)


def test_non_object_line_and_bad_gzip_are_data_errors(tmp_path):
    arr = tmp_path / "arr.jsonl"
    arr.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"{arr}:1: expected a JSON object, got list"):
        read_rows(arr)
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=rf"^{gz}: cannot read"):
        read_rows(gz)


def test_missing_file_and_unknown_format_name_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: data file not found"):
        read_rows(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"no_such_set: data file not found \(looked in .*tasks/data\)"):
        resolve_data_file("no_such_set")
    other = tmp_path / "d.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported data format"):
        read_rows(other)


def test_hf_source_without_datasets_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)   # import fails as if not installed
    with pytest.raises(DataError) as e:
        load_rows("hf:openai/gsm8k:main", split="test")
    assert str(e.value) == "hf:openai/gsm8k:main: the `datasets` package is not installed (pip install datasets)"


def test_data_dir_precedence_explicit_then_env_then_vendored(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir(), env.mkdir()
    monkeypatch.delenv("RLVR_DATA_DIR", raising=False)
    assert data_dirs() == [VENDORED_DIR]
    assert resolve_data_file("gsm8k_test") == VENDORED_DIR / "gsm8k_test.jsonl.gz"
    monkeypatch.setenv("RLVR_DATA_DIR", str(env))
    _write_jsonl(env / "gsm8k_test.jsonl", RECORDS)
    assert resolve_data_file("gsm8k_test") == env / "gsm8k_test.jsonl"
    _write_jsonl(explicit / "gsm8k_test.jsonl", RECORDS)
    assert resolve_data_file("gsm8k_test", explicit) == explicit / "gsm8k_test.jsonl"
    assert resolve_data_file("gsm8k_train", explicit) == VENDORED_DIR / "gsm8k_train.jsonl.gz"  # per-file


def test_user_data_dir_feeds_a_builtin_task(tmp_path, monkeypatch):
    from tasks import get_task

    _write_jsonl(tmp_path / "gsm8k_test.jsonl", RECORDS)
    monkeypatch.setenv("RLVR_DATA_DIR", str(tmp_path))
    examples = get_task("gsm8k", data_dir=None).load("test")
    assert [(e.question, e.gold) for e in examples] == [("1+1?", "2"), ("2+2?", "4")]
    bad = tmp_path / "explicit"
    bad.mkdir()
    (bad / "gsm8k_test.jsonl").write_text('{"question": "x", "answer": "no hashes"}\n')
    with pytest.raises(DataError, match=r"gsm8k_test.jsonl:1: no gold answer in field 'answer'"):
        get_task("gsm8k", data_dir=str(bad)).load("test")


def test_rows_to_examples_fields_ids_meta_and_missing_field(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"q": "a", "sol": "so \\boxed{\\frac{1}{2}}", "k": 7, "n": 1}])
    fields = FieldMap("q", "sol", gold_format="last_boxed", id="k", meta=(("num", "n"),))
    [ex] = rows_to_examples(read_rows(path), fields, prefix="t")
    assert (ex.id, ex.question, ex.gold, ex.meta) == ("t/7", "a", "\\frac{1}{2}", {"num": 1})
    with pytest.raises(DataError, match=rf"^{path}:1: missing field 'nothere'$"):
        rows_to_examples(read_rows(path), FieldMap("q", "nothere"), prefix="t")


def test_skip_no_gold_drops_only_goldless_records(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": ""}, {"question": "b", "answer": 3}])
    with pytest.raises(DataError, match=":1: no gold answer"):
        rows_to_examples(read_rows(path), FieldMap(), prefix="t")
    exs = rows_to_examples(read_rows(path), FieldMap(skip_no_gold=True), prefix="t")
    assert [(e.id, e.gold) for e in exs] == [("t/1", "3")]   # ids keep the record position


@pytest.mark.parametrize("value, gold", [(23.0, "23"), (2.5, "2.5"), (["$1$", "$2$"], "$1$, $2$"), (" 7 ", "7")])
def test_value_gold_format(tmp_path, value, gold):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": value}])
    assert rows_to_examples(read_rows(path), FieldMap(), prefix="t")[0].gold == gold


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{1} then \\boxed{\\frac{a}{b}}", "\\frac{a}{b}"),
    ("x = \\boxed{ {3,4} } .", "{3,4}"),
    ("\\fbox{5}", "5"),
    ("no box", None),
    ("\\boxed{unclosed", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected
