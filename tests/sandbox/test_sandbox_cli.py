"""`rlvr sandbox-check`: the layer table, every case, and the closing JSON line."""
from __future__ import annotations

import json

from rlvr.cli import main
from sandbox.adversarial import CASES


def test_sandbox_check_ends_with_summary(capsys):
    rc = main(["sandbox-check"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["cases"] == len(CASES)
    assert summary["contained"] == len(CASES) - len(summary["skipped"])
    assert rc == 0 and summary["layers"]["rlimits"] is True
    assert all(any(c.name in line for line in lines) for c in CASES)
