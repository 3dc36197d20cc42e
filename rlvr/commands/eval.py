"""`rlvr eval --task NAME [--model tiny|PATH] [--n 16] [--k 1,4,16] ...`: pass@k / pass^k / maj@k of a model.

A thin wrapper over `rlvr.eval.evaluate`; prints a table and the path of metrics.json.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rlvr.config import parse_override
from rlvr.errors import RLVRError


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="sample n responses per problem and report pass@k / maj@k")
    p.add_argument("--task", required=True, help="task name or path to a task YAML file")
    p.add_argument("--model", default="tiny", help="'tiny' (the embedded model), a local HF model dir or hub id")
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--k", default="1", help="comma-separated ks, each <= n (default: 1)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems")
    p.add_argument("--backend", default="hf", help="rollout backend (default: hf)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--max-new-tokens", type=int, default=256, help="response budget in tokens")
    p.add_argument("--split", default="test", help="task split (default: test)")
    p.add_argument("--out", default=None, help="output dir (default: runs/eval/<task>-<model>-<time>)")
    p.add_argument("--data-dir", default=None, help="directory searched first for task data files")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--timeout", type=float, default=5.0, help="per-verification deadline in seconds")
    p.add_argument("--batch-prompts", type=int, default=64, help="prompts per generate call")
    p.add_argument("--rerank", default=None, help="pick one of n: majority,rm,prm,weighted_rm,weighted_prm")
    p.add_argument("--scaling", default=None, help="accuracy-vs-N curve for budgets N, e.g. 1,2,4,8,16")
    p.add_argument("--rm", default=None, help="reward-model dir for --rerank rm")
    p.add_argument("--prm", default=None, help="PRM dir for --rerank prm")
    p.add_argument("--prm-agg", default="min", help="PRM step aggregation: min|prod|mean|last|sum")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. -o digits=3 (repeatable)")
    p.set_defaults(func=run)


def parse_ks(text: str, n: int) -> list[int]:
    from rlvr.eval import check_ks

    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RLVRError(f"--k {text!r}: expected comma-separated integers like 1,4,16") from None
    if not ks:
        raise RLVRError("--k: give at least one k")
    if n < 1:
        raise RLVRError(f"--n must be >= 1, got {n}")
    for k in ks:
        if k > n:
            raise RLVRError(f"--k: k={k} is larger than --n {n} (pass@k needs at least k samples per problem)")
        if k < 1:
            raise RLVRError(f"--k: k={k} must be >= 1")
    return check_ks(ks, n)


def run(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k, args.n)                     # validate before loading anything heavy
    if args.limit is not None and args.limit < 1:
        raise RLVRError(f"--limit must be >= 1, got {args.limit}")
    if args.data_dir is not None:
        if not Path(args.data_dir).is_dir():
            raise RLVRError(f"--data-dir {args.data_dir}: not a directory")
        os.environ["RLVR_DATA_DIR"] = str(Path(args.data_dir).resolve())   # read by tasks.data

    from rlvr.eval import evaluate
    from rlvr.models.tiny import default_model_dir
    from rlvr.rollout import get_engine
    from tasks.registry import get_task

    options = {".".join(key): value for key, value in map(parse_override, args.option)}
    task = get_task(args.task, **options)
    model = str(default_model_dir()) if args.model == "tiny" else args.model
    looks_local = Path(model).is_absolute() or model.startswith((".", "~"))
    if looks_local and not Path(model).expanduser().is_dir():
        raise RLVRError(f"--model {model}: no such directory")
    out = Path(args.out) if args.out else _default_out(task.name, args.model)
    try:
        engine = get_engine(args.backend, model=str(Path(model).expanduser()) if looks_local else model)
    except OSError as e:      # missing dir, hub id without network, no weights ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RLVRError(f"--model {model}: cannot load ({first})") from None
    try:
        metrics = evaluate(task, engine, n=args.n, ks=ks, split=args.split, limit=args.limit,
                           temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                           out_dir=out, timeout=args.timeout, seed=args.seed, batch_prompts=args.batch_prompts)
    finally:
        engine.close()
    _print_table(metrics, ks)
    print(f"metrics: {out / 'metrics.json'}")
    if args.rerank or args.scaling:
        from rlvr.bon import format_table, run_bon
        ns = [int(x) for x in args.scaling.split(",")] if args.scaling else [args.n]
        bon = run_bon(out / "samples.jsonl", out, (args.rerank or "majority").split(","), ns,
                      rm=args.rm, prm=args.prm, prm_how=args.prm_agg)
        print(format_table(bon["curve"]))
    return 0


def _default_out(task: str, model: str) -> Path:
    stem = Path(model.rstrip("/")).name or "model"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{task}-{stem}")
    return Path("runs") / "eval" / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_table(metrics: dict, ks: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    conf = int(round(100 * metrics["confidence"]))
    table = Table(title=f"{metrics['task']} ({metrics['split']}, {metrics['num_problems']} problems, "
                        f"n={metrics['n']}, T={metrics['temperature']:g})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column(f"{conf}% CI", justify="right")
    names = [f"{m}{k}{suffix}" for m, suffix in (("pass@", ""), ("pass^", ""), ("maj@", ""), ("maj@", "_avg"))
             for k in ks] + ["accuracy"]
    for name in names:
        if name in metrics:
            row = metrics[name]
            table.add_row(name, f"{row['value']:.4f}", f"[{row['ci'][0]:.4f}, {row['ci'][1]:.4f}]")
    console = Console()
    console.print(table)
    outcomes = ", ".join(f"{k} {v}" for k, v in metrics["outcomes"].items())
    console.print(f"outcomes: {outcomes}\nmean length {metrics['mean_response_tokens']:.1f} tokens, "
                  f"truncated {100 * metrics['truncated_frac']:.1f}%", highlight=False)
