"""`rlvr bon`: best-of-N reranking and the accuracy-vs-N scaling curve (PNG + table).

    rlvr bon --task arithmetic --model tiny --n 16 --rerank majority,prm,weighted_prm --prm runs/prm/model \
             --scaling 1,2,4,8,16
    rlvr bon --samples runs/eval/x/samples.jsonl --rerank majority,rm --rm runs/rm/model

Without --samples it first samples n responses per problem with `rlvr.eval.evaluate` (samples.jsonl in --out),
then scores every response once per scorer and computes each method's accuracy at each N (rlvr/bon.py).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlvr.errors import RLVRError


def register(subparsers) -> None:
    p = subparsers.add_parser("bon", help="best-of-N reranking (majority / RM / PRM / weighted) and scaling curves")
    p.add_argument("--task", default=None, help="task name or YAML (needed unless --samples is given)")
    p.add_argument("--samples", default=None, help="samples.jsonl of an earlier `rlvr eval` run (skips sampling)")
    p.add_argument("--model", default="tiny", help="policy to sample from: 'tiny', a local HF dir or hub id")
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--rerank", default="majority", help="comma-separated: majority, rm, prm, weighted_rm, weighted_prm")
    p.add_argument("--scaling", default=None, help="comma-separated budgets N (default: just n), e.g. 1,2,4,8,16")
    p.add_argument("--rm", default=None, help="reward model dir (from `rlvr train-rm`)")
    p.add_argument("--prm", default=None, help="process reward model dir (from `rlvr train-prm`)")
    p.add_argument("--prm-agg", default="min", help="PRM step aggregation: min, prod, mean, last, sum")
    p.add_argument("--prm-split", default="newline", help="how responses split into steps (verifiers.prm)")
    p.add_argument("--prm-separator", default=None, help="separator string for --prm-split separator")
    p.add_argument("--device", default="cpu", help="device for the RM / PRM")
    p.add_argument("--max-subsets", type=int, default=256, help="N-subsets averaged per problem and budget")
    p.add_argument("--limit", type=int, default=None, help="first N problems only")
    p.add_argument("--split", default="test", help="task split")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--max-new-tokens", type=int, default=256, help="response budget in tokens")
    p.add_argument("--seed", type=int, default=0, help="sampling and subset seed")
    p.add_argument("--timeout", type=float, default=5.0, help="per-verification deadline in seconds")
    p.add_argument("--out", default=None, help="output dir (default: runs/bon/<time>)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="task option")
    p.set_defaults(func=run)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RLVRError(f"{flag} {text!r}: expected comma-separated integers like 1,2,4,8") from None
    if not values or min(values) < 1:
        raise RLVRError(f"{flag} {text!r}: give integers >= 1")
    return values


def run(args: argparse.Namespace) -> int:
    from rlvr.bon import format_table, parse_method, run_bon
    from verifiers.prm import AGGREGATORS

    methods = [m.strip() for m in args.rerank.split(",") if m.strip()]
    for m in methods:
        parse_method(m)
    if args.prm_agg not in AGGREGATORS:
        raise RLVRError(f"--prm-agg {args.prm_agg!r}: choose one of {', '.join(AGGREGATORS)}")
    if args.samples is None and args.task is None:
        raise RLVRError("give --task (to sample) or --samples (an earlier eval's samples.jsonl)")
    ns = _ints(args.scaling, "--scaling") if args.scaling else None
    out = Path(args.out) if args.out else Path("runs") / "bon" / time.strftime("%Y%m%d-%H%M%S")
    samples = Path(args.samples) if args.samples else _sample(args, out)
    if ns is None:
        from rlvr.bon import load_samples
        ns = [len(load_samples(samples)[0])]
    result = run_bon(samples, out, methods, ns, max_subsets=args.max_subsets, seed=args.seed, rm=args.rm,
                     prm=args.prm, prm_how=args.prm_agg, prm_split=args.prm_split,
                     prm_separator=args.prm_separator, device=args.device)
    print(f"{result['num_problems']} problems, n={result['n']} samples each")
    print(format_table(result["curve"]))
    print(f"table: {result['files']['table']}\nplot: {result['files']['plot']}")
    return 0


def _sample(args: argparse.Namespace, out: Path) -> Path:
    """n samples per problem via rlvr.eval.evaluate; returns the samples.jsonl path."""
    from rlvr.config import parse_override
    from rlvr.eval import evaluate
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import resolve_model_path
    from tasks.registry import get_task

    if args.n < 1:
        raise RLVRError(f"--n must be >= 1, got {args.n}")
    options = {".".join(key): value for key, value in map(parse_override, args.option)}
    task = get_task(args.task, **options)
    try:
        engine = get_engine("hf", model=resolve_model_path(args.model))
    except OSError as e:      # missing dir, hub id without network, no weights ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RLVRError(f"--model {args.model}: cannot load ({first})") from None
    try:
        evaluate(task, engine, n=args.n, ks=[1], split=args.split, limit=args.limit, temperature=args.temperature,
                 max_new_tokens=args.max_new_tokens, out_dir=out, timeout=args.timeout, seed=args.seed,
                 progress=False)
    finally:
        engine.close()
    return out / "samples.jsonl"
