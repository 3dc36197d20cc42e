"""`rlvr algos` lists every registered name under its config key."""
from __future__ import annotations


def test_lists_every_registered_name(capsys, monkeypatch):
    from rlvr.algos import list_advantages, list_kl, list_policy_losses
    from rlvr.algos.aggregation import AGG_MODES
    from rlvr.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["algos"]) == 0
    out = capsys.readouterr().out
    for name in [*list_advantages(), *list_policy_losses(), *list_kl(), *AGG_MODES]:
        assert f" {name} " in out, name
    assert "arXiv:2507.18071" in out      # GSPO's docstring summary
