"""The README's "Add your own task" examples, run exactly as printed."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def section_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Add your own task", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def run(cmd: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    # `rlvr` as installed by `make install`; fall back to the module when the script is not on PATH.
    assign, argv = {}, shlex.split(cmd.split("#", 1)[0])
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        k, v = argv.pop(0).split("=", 1)
        assign[k] = v
    assert argv[0] == "rlvr"
    argv = [sys.executable, "-m", "rlvr.cli", *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env={**env, **assign}, capture_output=True, text=True, timeout=300)


def test_readme_examples_run_as_printed(tmp_path):
    blocks = section_blocks()
    kinds = [k for k, _ in blocks]
    assert kinds == ["yaml", "jsonl", "bash", "python"], kinds
    (yaml_text, jsonl_text, bash_text, py_text) = (b for _, b in blocks)
    for block in (yaml_text, py_text):
        assert len(block.strip().splitlines()) <= 30   # "each under ~20 lines" of substance
    d = tmp_path / "my_tasks"
    d.mkdir()
    (d / "units.yaml").write_text(yaml_text)
    (d / "units.jsonl").write_text(jsonl_text)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lines = [l for l in bash_text.strip().splitlines() if l.strip()]
    verify = run(lines[0], tmp_path, env)
    assert verify.returncode == 0, verify.stderr
    verdict = json.loads(verify.stdout.strip().splitlines()[-1])
    assert verdict["verdicts"]["math"]["status"] == "correct"
    listing = run(lines[1], tmp_path, {**env, "COLUMNS": "200"})
    assert listing.returncode == 0, listing.stderr
    assert "units" in listing.stdout and "gsm8k" in listing.stdout

    (tmp_path / "parity_task.py").write_text(py_text)
    out = subprocess.run([sys.executable, "parity_task.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('correct', 1.0), ('correct', 1.0), ('unparseable', 0.0)]"
