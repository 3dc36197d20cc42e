"""`rlvr algos`: every registered advantage estimator, policy loss, KL estimator and loss aggregation, with the
first line of its docstring (task plugins are loaded first, since they may register their own)."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("algos", help="list the registered advantage estimators, policy losses, KL "
                                            "estimators and loss aggregations (the names recipes use)")
    p.set_defaults(func=lambda args: list_cmd())


def _summary(fn) -> str:
    doc = (fn.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def list_cmd() -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from rlvr.algos.aggregation import AGG_MODES
    from rlvr.algos.registry import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES
    from tasks.registry import list_tasks

    list_tasks()   # imports the rlvr.tasks entry points
    table = Table(title="rlvr algorithms (GRPO/PPO config keys)")
    for col in ("key", "name", "what"):
        table.add_column(col, no_wrap=col != "what", overflow="fold")
    for key, registry in (("advantage", ADVANTAGES), ("policy_loss", POLICY_LOSSES), ("kl_estimator", KL_ESTIMATORS)):
        for name in registry.names():
            table.add_row(key, name, Text(_summary(registry.get(name))))
    for mode in AGG_MODES:
        table.add_row("loss_agg", mode, Text("how loss_mat [B, T] becomes one number (rlvr/algos/aggregation.py)"))
    Console().print(table)
    return 0
