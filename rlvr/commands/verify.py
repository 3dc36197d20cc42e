"""`rlvr verify --task NAME --response TEXT --gold TEXT` and `rlvr verify --task NAME --file completions.jsonl`.

Scores responses with the task's verifiers (`Task.score`, i.e. the verifier pool with hard deadlines) and prints
one JSON line per response:

    {"line": 3, "id": "test/algebra/1.json", "reward": 1.0, "status": "correct", "answer": "14/3",
     "verdicts": {"math": {"status": "correct", "reward": 1.0, "info": {...}}, ...}}

Each JSONL line is {"response": ..., "gold": ...} or {"response": ..., "id": ...} (the id is looked up in the
task's splits; a "gold" next to an "id" overrides the example's gold). Optional keys: "truncated", "num_tokens".
Every line is validated before anything runs; a malformed one is a one-line error naming file:line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlvr.config import parse_override
from rlvr.errors import DataError, RLVRError

__all__ = ["register", "run", "read_completions"]

_KEYS = {"response", "gold", "id", "truncated", "num_tokens"}


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="score responses with a task's verifiers (JSON lines out)")
    p.add_argument("--task", required=True, help="task name or path to a task YAML file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--response", help="one response text (needs --gold)")
    src.add_argument("--file", help="JSONL file of {response, gold} or {response, id} records")
    p.add_argument("--gold", help="gold answer for --response")
    p.add_argument("--split", default=None, help="split to look ids up in (default: every split of the task)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-verifier-call deadline in seconds")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. -o digits=5 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tasks.base import Example
    from tasks.registry import get_task

    if not args.timeout > 0:
        raise RLVRError(f"--timeout must be > 0 seconds, got {args.timeout}")
    options = {".".join(key): value for key, value in map(parse_override, args.option)}
    task = get_task(args.task, **options)
    if args.response is not None:
        if args.gold is None:
            raise RLVRError("--response needs --gold (or use --file with ids)")
        records = [{"line": None, "where": "--response", "response": args.response, "gold": args.gold}]
    else:
        if args.gold is not None:
            raise RLVRError("--gold goes with --response; in --file mode each line carries its gold or id")
        records = read_completions(Path(args.file))
    lookup = _IdLookup(task, args.split)
    examples = []
    for rec in records:
        example = lookup.get(rec) if "id" in rec else Example(id="", question="", gold=str(rec["gold"]))
        if "id" in rec and "gold" in rec:
            example = Example(id=example.id, question=example.question, gold=str(rec["gold"]), meta=example.meta)
        examples.append(example)
    scores = task.score([r["response"] for r in records], examples,
                        truncated=[bool(r.get("truncated", False)) for r in records],
                        num_tokens=[r.get("num_tokens") for r in records], timeout=args.timeout)
    for rec, ex, score in zip(records, examples, scores):
        out: dict[str, Any] = {"line": rec["line"], "id": ex.id or None, "reward": score.reward,
                               "status": score.status, "answer": score.answer,
                               "verdicts": {name: v.to_dict() for name, v in score.verdicts.items()}}
        print(json.dumps(out, default=str, ensure_ascii=False))
    return 0


def read_completions(path: Path) -> list[dict[str, Any]]:
    """Parse and validate every line of a completions JSONL file; raise DataError naming file:line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                rec = json.loads(text)
            except UnicodeDecodeError:
                raise DataError(f"{where}: not valid UTF-8") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            records.append(_validate(rec, where) | {"line": lineno, "where": where})
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _validate(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    unknown = sorted(set(rec) - _KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    if not isinstance(rec.get("response"), str):
        raise DataError(f"{where}: 'response' must be a string")
    if "gold" not in rec and "id" not in rec:
        raise DataError(f"{where}: needs 'gold' or 'id'")
    if "gold" in rec and not isinstance(rec["gold"], (str, int, float)):
        raise DataError(f"{where}: 'gold' must be a string or number")
    if rec.get("num_tokens") is not None and not isinstance(rec["num_tokens"], int):
        raise DataError(f"{where}: 'num_tokens' must be an integer")
    return rec


class _IdLookup:
    """Example ids -> examples over the task's splits, loaded only when a record asks for an id."""

    def __init__(self, task, split: str | None) -> None:
        if split is not None and split not in task.splits:
            raise RLVRError(f"task {task.name!r} has no split {split!r}; splits: {', '.join(task.splits)}")
        self.task, self.splits, self.index = task, [split] if split else list(task.splits), None

    def get(self, rec: dict[str, Any]):
        if self.index is None:
            self.index = {}
            for split in self.splits:
                for ex in self.task.load(split):
                    self.index.setdefault(str(ex.id), ex)
        key = str(rec["id"])
        if key not in self.index and f"{self.task.name}/{key}" in self.index:   # ids may carry a task prefix
            key = f"{self.task.name}/{key}"
        if key not in self.index:
            raise DataError(f"{rec['where']}: id {key!r} not found in task {self.task.name!r} "
                            f"(splits: {', '.join(self.splits)})")
        return self.index[key]
