"""End-of-run artefacts: a PNG of the learning curves and a short markdown report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlvr.trainers.checkpoint import atomic_write_text
from rlvr.trainers.logger import read_jsonl

CURVES = [("grpo", "reward/mean", "GRPO mean reward"), ("grpo", "eval/pass@1", "held-out greedy pass@1 (GRPO)"),
          ("sft", "loss/sft", "SFT loss"), ("sft", "eval/pass@1", "held-out greedy pass@1 (SFT)"),
          ("grpo", "sampling/dropped_groups", "GRPO dropped groups"), ("grpo", "policy/entropy", "GRPO entropy"),
          ("ppo", "reward/mean", "PPO mean reward"), ("ppo", "eval/pass@1", "held-out greedy pass@1 (PPO)"),
          ("dpo", "eval/pass@1", "held-out greedy pass@1 (DPO)")]


def plot_curves(out: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for stage, key, title in CURVES:
        rows = [r for r in read_jsonl(out / stage / f"{stage}_metrics.jsonl") if r.get(key) is not None]
        if rows:
            panels.append((title, [r["step"] for r in rows], [r[key] for r in rows]))
    if not panels:
        return None
    cols = 2
    fig, axes = plt.subplots((len(panels) + 1) // cols, cols, figsize=(10, 3 * ((len(panels) + 1) // cols)),
                             squeeze=False)
    for ax, (title, xs, ys) in zip(axes.flat, panels):
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path = out / "curves.png"
    tmp = out / ".curves.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(out: Path, recipe: Any, summary: dict[str, Any]) -> Path:
    out = Path(out)
    png = plot_curves(out)
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"
    lines = [f"# Run report: {recipe.name}", "", recipe.description.strip(), ""]
    lines += ["## Result (held-out greedy pass@1)", "", "| model | greedy pass@1 |", "|---|---|",
              f"| start (after SFT cold start) | {pct(summary.get('pass@1_start'))} |"]
    if "pass@1_end" in summary:
        stage = (getattr(recipe, "rl_stage", None) or "RL").upper()
        lines.append(f"| after {stage} | {pct(summary['pass@1_end'])} |")
    if "pass@1_sft_control" in summary:
        lines.append(f"| control: labelled SFT, same compute ({summary.get('control_steps')} steps) | "
                     f"{pct(summary['pass@1_sft_control'])} |")
    lines += ["", "## Sampled metrics", ""]
    for key in ("eval_start", "eval_end", "eval_control"):
        ev = summary.get(key)
        if ev:
            shown = {k: v for k, v in ev.items() if k.startswith(("pass@", "maj@", "pass^", "greedy", "multiturn"))
                     and isinstance(v, (int, float))}
            lines.append(f"- **{key}**: " + ", ".join(f"{k} = {v:.3f}" for k, v in sorted(shown.items())))
    lines += ["", "## Stages", ""]
    for st in summary.get("stages", []):
        lines.append(f"- {st['name']} ({st['kind']}): {st.get('steps')} steps, {st.get('wall_s', 0):.1f} s")
    lines.append(f"\nTotal wall time: {summary.get('wall_s', 0):.1f} s")
    if png:
        lines += ["", "## Curves", "", f"![curves]({png.name})"]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(recipe.model_dump(), sort_keys=False).strip(), "```", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
