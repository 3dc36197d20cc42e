"""`rlvr check-references --task humaneval|mbpp [--split S] [--limit N]`: run every reference solution of a code
task through its verifiers (the verifier pool, so the same path as training) and list those that fail and why.

The last line printed is one JSON object: {"passed": ..., "total": ..., "failed_ids": [...]}. Exit code 0
when every reference passes, 1 otherwise (some upstream references are known to fail; see docs/sandbox.md).
"""
from __future__ import annotations

import argparse
import json
import time

from rlvr.config import parse_override
from rlvr.errors import RLVRError

__all__ = ["register", "run", "check_references"]


def register(subparsers) -> None:
    p = subparsers.add_parser("check-references", help="run a code task's reference solutions through its verifier")
    p.add_argument("--task", required=True, help="task whose examples carry meta['reference'] (humaneval, mbpp)")
    p.add_argument("--split", default=None, help="split (default: full if the task has it, else test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline of the verifier pool (s)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. -o timeout_s=5 (repeatable)")
    p.set_defaults(func=run)


def check_references(task_name: str, split: str | None = None, limit: int | None = None, timeout: float = 10.0,
                     **options) -> tuple[dict, list[tuple[str, str, str]]]:
    """(summary, failures) where failures are (id, status, reason)."""
    from tasks.registry import get_task

    task = get_task(task_name, **options)
    split = split or ("full" if "full" in task.splits else "test")
    if split not in task.splits:
        raise RLVRError(f"task {task.name!r} has no split {split!r}; splits: {', '.join(task.splits)}")
    examples = task.load(split, limit)
    missing = [e.id for e in examples if not e.meta.get("reference")]
    if missing:
        raise RLVRError(f"task {task.name!r}: {len(missing)} examples have no meta['reference'] "
                        f"(first: {missing[0]}); only code tasks with reference solutions can be checked")
    responses = [f"```python\n{e.meta['reference']}\n```" for e in examples]
    scores = task.score(responses, examples, timeout=timeout)
    failures = []
    for ex, score in zip(examples, scores):
        if not score.correct:
            verdict = score.verdicts[score.primary]
            failures.append((ex.id, verdict.status, str(verdict.info.get("reason", ""))))
    summary = {"passed": len(examples) - len(failures), "total": len(examples),
               "failed_ids": [f[0] for f in failures]}
    return summary, failures


def run(args: argparse.Namespace) -> int:
    options = {".".join(key): value for key, value in map(parse_override, args.option)}
    start = time.monotonic()
    summary, failures = check_references(args.task, args.split, args.limit, args.timeout, **options)
    for ex_id, status, reason in failures:
        print(f"FAIL {ex_id}: {status}: {reason}")
    print(f"{summary['passed']}/{summary['total']} references pass ({time.monotonic() - start:.1f}s)")
    print(json.dumps(summary))
    return 0 if not failures else 1
