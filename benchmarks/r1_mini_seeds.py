"""R1-mini robustness: the full recipe (SFT to threshold -> GRPO -> eval, plus the labelled-SFT control) for
several seeds, one after another in this process. Prints a table and, last, one JSON line:
{"seeds": [...], "gains": [...], "min_gain": ..., "mean_gain": ..., "max_wall_s": ...}

    python benchmarks/r1_mini_seeds.py [--seeds 0,1,2] [--out runs/r1_mini_seeds] [--resume] [key=value overrides ...]

--resume skips the stages a seed's directory already finished (e.g. reuse the SFT start to try GRPO settings;
the wall times then cover only the stages that ran).
"""
from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/r1_mini_seeds")
    ap.add_argument("--recipe", default="recipes/r1_mini.yaml")
    ap.add_argument("--resume", action="store_true", help="skip stages already finished in --out")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from rlvr.pipeline import run_recipe
    from rlvr.recipe import load_recipe

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        recipe = load_recipe(args.recipe, [*args.overrides, f"seed={seed}", f"output_dir={args.out}/seed{seed}"])
        s = run_recipe(recipe, resume=args.resume, log=lambda m: None)
        rows.append({"seed": seed, "start": s["pass@1_start"], "end": s.get("pass@1_end"),
                     "control": s.get("pass@1_sft_control"), "wall_s": s["wall_s"],
                     "sft_steps": s["stages"][0]["steps"] if s["stages"] else None})
    print(f"\n{'seed':>4} {'SFT steps':>9} {'start':>7} {'GRPO end':>9} {'gain':>7} {'SFT control':>12} {'wall s':>7}")
    for r in rows:
        gain = (r["end"] - r["start"]) * 100
        print(f"{r['seed']:>4} {r['sft_steps']:>9} {r['start']:>7.1%} {r['end']:>9.1%} {gain:>+6.1f}p "
              f"{r['control']:>12.1%} {r['wall_s']:>7.0f}")
    gains = [round((r["end"] - r["start"]) * 100, 1) for r in rows]
    print(json.dumps({"seeds": [r["seed"] for r in rows], "start": [r["start"] for r in rows],
                      "end": [r["end"] for r in rows], "control": [r["control"] for r in rows], "gains": gains,
                      "min_gain": min(gains), "mean_gain": round(sum(gains) / len(gains), 1),
                      "max_wall_s": round(max(r["wall_s"] for r in rows), 1)}))


if __name__ == "__main__":
    main()
