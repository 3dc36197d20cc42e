"""`rlvr sandbox-check [--mode warm|fresh] [--bwrap auto|on|off]`: print which isolation layers are active on
this machine, run the adversarial suite (`sandbox/adversarial.py`) against them, and end with one JSON line

    {"cases": 16, "contained": 16, "skipped": [], "layers": {"bubblewrap": true, ...}}

`skipped` lists cases whose layers are all off here (the layer report says so). Exit code 0 when every case
that ran was contained, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import time

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser("sandbox-check", help="report sandbox layers and run the adversarial suite")
    p.add_argument("--mode", choices=("warm", "fresh"), default=None, help="zygote mode (default: env / warm)")
    p.add_argument("--bwrap", choices=("auto", "on", "off"), default=None, help="use bubblewrap (default: auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sandbox.adversarial import CASES, run_case
    from sandbox.local import LocalBackend, LocalOptions

    opts = LocalOptions.from_env()
    opts = replace(opts, **{k: v for k, v in (("mode", args.mode), ("bwrap", args.bwrap)) if v is not None})
    backend = LocalBackend(opts)
    try:
        layers = backend.layers()
        print(f"sandbox layers (local backend, mode {opts.mode}):")
        for name, layer in layers.items():
            print(f"  {'on ' if layer.on else 'OFF'} {name:<14} {layer.detail}")
        print("adversarial cases:")
        outcomes = []
        for case in CASES:
            start = time.monotonic()
            out = run_case(case, backend, layers)
            outcomes.append(out)
            mark = {True: "contained", False: "NOT CONTAINED", None: "skipped"}[out.contained]
            print(f"  {mark:<13} {case.name:<22} {out.status:<8} {time.monotonic() - start:5.2f}s  {out.detail}")
    finally:
        backend.shutdown()
    skipped = [o.name for o in outcomes if o.contained is None]
    contained = sum(o.contained is True for o in outcomes)
    print(json.dumps({"cases": len(outcomes), "contained": contained, "skipped": skipped,
                      "layers": {k: v.on for k, v in layers.items()}}))
    return 0 if contained == len(outcomes) - len(skipped) else 1
