"""`rlvr train-rm CONFIG.yaml [key=value ...] [--resume]` and `rlvr train-prm ...`: reward-model trainers.

Thin wrappers: the YAML file is an `RMConfig` / `PRMConfig` (rlvr/trainers/reward_model.py, prm.py); dotted
overrides follow it; the final line printed is the summary as JSON (the model is in <output_dir>/model).
"""
from __future__ import annotations

import json


def register(sub) -> None:
    for name, helptext in (("train-rm", "train a Bradley-Terry reward model (pairs or rankings)"),
                           ("train-prm", "train a process reward model (step labels)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", help="config YAML file (see recipes/rm_hh.yaml, recipes/prm_synthetic.yaml)")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lr=1e-4 output_dir=runs/x")
        p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
        p.set_defaults(func=run_rm if name == "train-rm" else run_prm)


def run_rm(args) -> int:
    from rlvr.config import load_config
    from rlvr.trainers.reward_model import RMConfig, train_reward_model

    cfg = load_config(RMConfig, args.config, args.overrides)
    summary = train_reward_model(cfg, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "evals"}))
    return 0


def run_prm(args) -> int:
    from rlvr.config import load_config
    from rlvr.trainers.prm import PRMConfig, train_prm

    cfg = load_config(PRMConfig, args.config, args.overrides)
    summary = train_prm(cfg, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "evals"}))
    return 0
