"""`rlvr train RECIPE.yaml [key.path=value ...] [--resume]`."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="run a training recipe (SFT, then GRPO / PPO / DPO; eval, report)")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. grpo.lr=1e-4 output_dir=runs/x")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoints in output_dir")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from rlvr.pipeline import run_recipe
    from rlvr.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    summary = run_recipe(recipe, resume=args.resume)
    keys = ("pass@1_start", "pass@1_end", "pass@1_sft_control", "wall_s")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    return 0
