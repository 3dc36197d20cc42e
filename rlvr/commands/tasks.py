"""`rlvr tasks list` (every registered task: splits with sizes, source, verifiers) and
`rlvr tasks show NAME [--split S] [--n 3] [-o key=value ...]` (a few rendered examples)."""
from __future__ import annotations

import argparse

from rlvr.errors import RLVRError


def register(subparsers) -> None:
    p = subparsers.add_parser("tasks", help="list tasks or show examples of one")
    sub = p.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="table of every registered task")
    ls.set_defaults(func=lambda args: list_cmd())
    show = sub.add_parser("show", help="print a few rendered examples of a task")
    show.add_argument("name", help="task name or path to a task YAML file")
    show.add_argument("--split", default=None, help="split to show (default: test if present, else the first)")
    show.add_argument("--n", type=int, default=3, help="number of examples")
    show.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                      help="task option, e.g. -o digits=5 (repeatable)")
    show.set_defaults(func=show_cmd)


def list_cmd() -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tasks.registry import get_task, list_tasks, task_source

    console = Console()
    columns = ["name", "splits", "source", "verifiers"] + (["description"] if console.width >= 120 else [])
    table = Table(title="rlvr tasks")
    for col in columns:
        table.add_column(col, no_wrap=col == "name", overflow="fold")
    for name in list_tasks():
        try:   # one broken task (e.g. an hf: dataset without network) must not hide the others
            task = get_task(name)
            splits = ", ".join(f"{s} {task.size(s):,}" for s in task.splits)
            verifiers = ", ".join(f"{w.name}×{w.weight:g}" for w in task.verifiers)
            description = task.description
        except Exception as e:  # noqa: BLE001 - shown in the table instead
            splits, verifiers, description = "?", "?", f"error: {e}"
        cells = (name, splits, task_source(name), verifiers, description)[:len(columns)]
        table.add_row(*(Text(str(c)) for c in cells))
    console.print(table)
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    from rlvr.config import parse_override
    from tasks.registry import get_task

    options = {}
    for item in args.option:
        key, value = parse_override(item)
        options[".".join(key)] = value
    task = get_task(args.name, **options)
    split = args.split or ("test" if "test" in task.splits else task.splits[0])
    if split not in task.splits:
        raise RLVRError(f"task {task.name!r} has no split {split!r}; splits: {', '.join(task.splits)}")
    examples = task.load(split, limit=args.n)
    print(f"{task.name} [{split}]: {task.size(split):,} examples; verifiers "
          + ", ".join(f"{w.name}×{w.weight:g}" for w in task.verifiers))
    for ex in examples:
        print(f"\n--- {ex.id}  gold={ex.gold!r}")
        text = task.render(ex)
        print(text, end="" if text.endswith("\n") else "\n")
        if ex.meta:
            print("meta: " + ", ".join(f"{k}={_short(v)}" for k, v in ex.meta.items()))
    return 0


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
