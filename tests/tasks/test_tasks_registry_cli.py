"""Task registry (entry points, unknown names) and the `rlvr tasks` command."""
from __future__ import annotations

import time

import pytest

from rlvr.cli import main
from tasks import Example, PromptTemplate, Task, WeightedVerifier, get_task, list_tasks, register_task
from tasks import registry
from verifiers.base import get_verifier

REQUIRED = ["gsm8k", "math500", "math12k", "aime24", "amc23", "minerva_math", "olympiadbench", "arithmetic",
            "countdown", "gsm8k_int"]


def _plugin_task() -> Task:
    return Task(name="plugin_task", loader=lambda split, limit: [Example("p/0", "1 + 1", "2")],
                verifiers=[WeightedVerifier(get_verifier("integer"))], template=PromptTemplate())


class _FakeEntryPoint:
    def __init__(self, name, value, obj):
        self.name, self.value, self._obj = name, value, obj

    def load(self):
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry that reloads (YAML dir + entry points) into a copy; built-ins were registered on import."""
    registry.list_tasks()
    monkeypatch.setattr(registry, "_FACTORIES", {k: v for k, v in registry._FACTORIES.items()
                                                 if v[1] != "builtin-yaml"})
    monkeypatch.setattr(registry, "_BUILT", {})
    monkeypatch.setattr(registry, "_LOADED", False)
    return monkeypatch


def test_entry_point_task_is_listed_and_built(fresh_registry, capsys):
    eps = [_FakeEntryPoint("plugin_task", "myplugin.tasks:make", _plugin_task),
           _FakeEntryPoint("broken", "broken.mod:make", ImportError("no module named broken"))]
    fresh_registry.setattr(registry, "entry_points", lambda group: eps if group == "rlvr.tasks" else [])
    names = list_tasks()
    assert "plugin_task" in names and "broken" not in names and "gsm8k_int" in names
    assert registry.task_source("plugin_task") == "entry-point:myplugin.tasks:make"
    assert get_task("plugin_task").load("test")[0].gold == "2"
    assert "entry point 'broken'" in capsys.readouterr().out


def test_register_task_rejects_duplicates():
    with pytest.raises(ValueError, match="task 'gsm8k' is already registered"):
        register_task("gsm8k")(_plugin_task)


def test_unknown_task_name():
    with pytest.raises(KeyError, match="unknown task 'nope'; known: aime24, amc23"):
        get_task("nope")


def test_cli_tasks_list_shows_every_task_with_sizes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    start = time.perf_counter()
    assert main(["tasks", "list"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 2}
    for name in REQUIRED:
        assert name in lines, name
    assert "train 7,473, test 1,319" in lines["gsm8k"] and "math×1" in lines["gsm8k"]
    assert "train 10,000, test 500" in lines["countdown"] and "countdown×1" in lines["countdown"]
    assert "builtin-yaml" in lines["gsm8k_int"]
    assert elapsed < 10, f"tasks list took {elapsed:.1f}s"


def test_cli_tasks_show(capsys):
    assert main(["tasks", "show", "arithmetic", "--n", "2", "-o", "digits=2", "-o", "ops=*"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arithmetic [test]: 500 examples; verifiers integer×1")
    assert out.count("--- arithmetic/test/") == 2 and " * " in out and "<answer></answer>" in out
    assert main(["tasks", "show", "math500", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "\\boxed{}" in out and "gold='\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)'" in out


@pytest.mark.parametrize("argv, message", [
    (["tasks", "show", "nope"], "unknown task 'nope'"),
    (["tasks", "show", "gsm8k", "--split", "val"], "task 'gsm8k' has no split 'val'; splits: train, test"),
    (["tasks", "show", "arithmetic", "-o", "digits=0"], "bad options for task 'arithmetic'"),
])
def test_cli_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlvr tasks: error: ") and message in err and err.count("\n") == 1
