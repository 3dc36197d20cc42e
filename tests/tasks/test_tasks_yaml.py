"""YAML tasks: loading, per-split data, registration of a directory, and one-line errors naming file + key."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest

from rlvr.errors import ConfigError, DataError
from tasks import get_task
from tasks.yaml_task import load_yaml_task, register_yaml_dir

TASK = """\
name: demo
description: a demo task
data: demo.jsonl
fields: {question: q, gold: a, id: key, meta: [level]}
template:
  system: Be brief.
  user: "Level {level}: {question} Put the answer in \\\\boxed{{}}."
verifiers:
  - {name: integer, weight: 0.5, options: {pick: first}}
  - {name: countdown}
primary: integer
"""


@pytest.fixture
def demo(tmp_path):
    rows = [{"q": "What is 2 + 2?", "a": 4, "key": "x1", "level": 1},
            {"q": "What is 3 * 3?", "a": 9, "key": "x2", "level": 2}]
    (tmp_path / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "demo.yaml"
    path.write_text(TASK)
    return path


def test_load_yaml_task(demo):
    task = load_yaml_task(demo)
    assert (task.name, task.splits, task.primary, task.description) == ("demo", ("test",), "integer", "a demo task")
    assert [(w.name, w.weight) for w in task.verifiers] == [("integer", 0.5), ("countdown", 1.0)]
    assert task.verifiers[0].verifier.pick == "first"
    examples = task.load("test")
    assert [(e.id, e.gold, e.meta) for e in examples] == [("demo/x1", "4", {"level": 1}),
                                                           ("demo/x2", "9", {"level": 2})]
    assert task.render(examples[0]) == "Be brief.\n\nLevel 1: What is 2 + 2? Put the answer in \\boxed{}.\n"
    assert get_task(str(demo)).name == "demo"           # get_task accepts a YAML path too


def test_options_override_keys(demo):
    task = load_yaml_task(demo, description="changed", primary="countdown")
    assert (task.description, task.primary) == ("changed", "countdown")


def test_per_split_mapping_and_vendored_names(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent("""\
        name: gsm_small
        data: {train: gsm8k_train, test: gsm8k_test}
        fields: {gold_format: after_hashes}
        verifiers: [{name: integer}]
    """))
    task = load_yaml_task(path)
    assert task.splits == ("train", "test") and task.size("test") == 1319
    assert task.load("train")[0].id == "gsm_small/train/0"
    path.write_text(path.read_text().replace("data:", "splits:"))          # the same mapping under `splits`
    assert load_yaml_task(path).splits == ("train", "test")


@pytest.mark.parametrize("change, message", [
    ({"verifers": []}, r"demo.yaml: unknown key 'verifers'"),
    ({"fields": {"question": "q", "answr": "a"}}, r"demo.yaml: unknown key 'fields.answr'"),
    ({"verifiers": []}, r"demo.yaml: verifiers: List should have at least 1 item"),
    ({"verifiers": [{"name": "nope"}]}, r"demo.yaml: verifiers.0: unknown verifier 'nope'"),
    ({"verifiers": [{"name": "integer", "options": {"colour": 1}}]}, r"demo.yaml: verifiers.0: bad options"),
    ({"primary": "math"}, r"demo.yaml: task 'demo': primary 'math' is not one of"),
    ({"fields": {"gold_format": "roman"}}, r"demo.yaml: fields.gold_format: 'roman' is not one of"),
    ({"template": {"user": "{question} {topic}"}}, r"demo.yaml: template.user: unknown field \{topic\}"),
    ({"template": {"user": "\\boxed{}"}}, r"demo.yaml: template.user: unknown field \{\}"),
    ({"template": {"user": "{question"}}, r"demo.yaml: template.user: .*literal braces"),
    ({"name": "has space"}, r"demo.yaml: name: expected a task name"),
    ({"data": "a.jsonl", "splits": ["train", "test"]}, r"demo.yaml: splits: a local file serves one split"),
    ({"data": {"test": "a.jsonl"}, "splits": ["train"]}, r"demo.yaml: splits: .* disagrees"),
    ({"splits": {"test": "a.jsonl"}}, r"demo.yaml: splits: give the \{split: source\} mapping either"),
    ({"data": None}, r"demo.yaml: data: missing"),
])
def test_bad_yaml_is_one_line_naming_file_and_key(demo, change, message):
    import yaml

    doc = {**yaml.safe_load(demo.read_text()), **change}
    demo.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message) as e:
        load_yaml_task(demo)
    assert "\n" not in str(e.value)


def test_invalid_yaml_syntax_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: invalid YAML"):
        load_yaml_task(path)


def test_missing_data_file_is_reported_at_load(demo):
    demo.write_text(TASK.replace("demo.jsonl", "gone.jsonl"))
    task = load_yaml_task(demo)                            # lazy: building needs no data
    with pytest.raises(DataError, match=r"demo.yaml: data: gone.jsonl: data file not found"):
        task.load("test")


def test_malformed_data_line_is_reported_with_file_and_line(demo):
    (demo.parent / "demo.jsonl").write_text('{"q": "a", "a": 1, "key": 1, "level": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"demo.jsonl:2: invalid JSON"):
        load_yaml_task(demo).load("test")


def test_hf_data_without_datasets(demo, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    demo.write_text(TASK.replace("data: demo.jsonl", "data: hf:someone/set\nsplits: [train, test]"))
    task = load_yaml_task(demo)
    assert task.splits == ("train", "test")
    with pytest.raises(DataError, match=r"^hf:someone/set: the `datasets` package is not installed"):
        task.load("train")


def test_register_yaml_dir(tmp_path, monkeypatch, demo):
    from tasks import registry

    registry.list_tasks()                                   # built-ins first, then a private copy
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_BUILT", {})
    assert register_yaml_dir(tmp_path, source="yaml:test") == ["demo"]
    assert registry.task_source("demo") == "yaml:test"
    assert get_task("demo").load("test")[0].gold == "4"
    assert get_task("demo", description="x").description == "x"
    with pytest.raises(ConfigError, match=r"demo.yaml: task 'demo' is already registered"):
        register_yaml_dir(tmp_path, source="yaml:again")
    with pytest.raises(ConfigError, match="task directory not found"):
        register_yaml_dir(tmp_path / "nope", source="x")


def test_builtin_yaml_task_is_registered_and_verifies():
    task = get_task("gsm8k_int")
    assert task.source == "builtin-yaml" and task.splits == ("train", "test")
    ex = task.load("test")[0]
    assert ex.gold == "18" and "#### 18" in ex.meta["solution"]
    v = task.verifiers[0].verifier
    assert v(f"16 - 3 - 4 = 9 eggs, 9 * 2 = 18 <answer>{ex.gold}</answer>", task.context(ex)).status == "correct"
    assert "<answer></answer>" in task.render(ex)
