"""`rlvr run RUN.yaml [stages.NAME.config.key=value ...]`: a multi-stage run (resumes by default)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("run", help="run a multi-stage recipe (a DAG of sft/grpo/ppo/dpo/rejection_sampling/rm/"
                                   "prm/eval stages) as one resumable run")
    p.add_argument("recipe", help="run YAML file (see recipes/r1_mini_full.yaml)")
    p.add_argument("overrides", nargs="*",
                   help="dotted overrides; stages by name, e.g. stages.rl.config.steps=10 output_dir=runs/x")
    p.add_argument("--dry-run", action="store_true", help="validate and print the stage order, run nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from rlvr.workflow.runner import run_workflow
    from rlvr.workflow.spec import dependencies, load_workflow, order

    wf = load_workflow(args.recipe, args.overrides)
    if args.dry_run:
        for s in order(wf):
            deps = dependencies(wf, s)
            print(f"{s.name} ({s.kind})" + (f" <- {', '.join(deps)}" if deps else ""))
        return 0
    summary = run_workflow(wf, recipe_path=args.recipe)
    print(f"report: {wf.out_dir}/report.md")
    print(json.dumps({"status": summary["status"], "wall_s": round(summary["wall_s"], 1),
                      "stages": [{"name": s["name"], "status": s["status"],
                                  "pass@1": (s.get("metrics") or {}).get("pass@1")} for s in summary["stages"]]}))
    return 0
