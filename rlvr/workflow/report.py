"""`rlvr report RUN_DIR`: a markdown report of a multi-stage run — lineage graph, per-stage metrics, the eval
table (every stage's pass@1 / pass@k side by side) and PNG curves — from summary.json, manifest.json and each
stage's `*_metrics.jsonl`. Also written at the end of every `rlvr run`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr.errors import RLVRError
from rlvr.trainers.checkpoint import atomic_write_text
from rlvr.trainers.logger import read_jsonl

# Curves drawn per stage, when its metrics file has them.
CURVE_KEYS = ["loss/sft", "reward/mean", "eval/pass@1", "loss/policy", "policy/entropy", "sampling/dropped_groups",
              "loss/dpo", "rm/accuracy", "eval/pairwise_accuracy", "eval/step_auc", "kl/mean"]


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{100 * v:.1f}%"


def _eval_rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("base", summary["base_eval"])] if summary.get("base_eval") else []
    rows += [(s["name"], s["eval"]) for s in summary.get("stages", []) if s.get("eval")]
    rows += [(s["name"], s["metrics"]) for s in summary.get("stages", []) if s.get("kind") == "eval" and s.get("metrics")]
    return rows


def _k_keys(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """pass@k and maj@k columns (k > 1 for pass@k), ordered pass before maj, then by k."""
    from rlvr.workflow.runner import HEADLINE
    keys = {k for _, m in rows for k in m if HEADLINE.match(k) and k != "pass@1" and isinstance(m.get(k), (int, float))}
    multi = ["multiturn_pass@1"] if any("multiturn_pass@1" in m for _, m in rows) else []
    return sorted(keys, key=lambda k: (k.split("@")[0] != "pass", int(k.split("@")[1]))) + multi


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_eval(out: Path, rows: list[tuple[str, dict[str, Any]]]) -> Path | None:
    """Grouped bars: greedy pass@1, sampled pass@1 and the largest pass@k / maj@k per evaluated model."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["greedy_pass@1", "pass@1"] + _k_keys(rows)
    keys = [k for k in keys if any(isinstance(m.get(k), (int, float)) for _, m in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) * max(1, len(keys)) / 2), 3.5))
    width = 0.8 / max(1, len(keys))
    for j, k in enumerate(keys):
        ax.bar([i + j * width for i in range(len(rows))], [m.get(k) or 0 for _, m in rows], width,
               label="greedy pass@1" if k == "greedy_pass@1" else ("sampled pass@1" if k == "pass@1" else k))
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(rows))], [n for n, _ in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out / "eval.png")


def plot_stage_curves(out: Path, stage: str) -> Path | None:
    files = sorted((out / "stages" / stage).glob("*_metrics.jsonl"))
    rows = [r for f in files for r in read_jsonl(f)]
    panels = [(k, [r["step"] for r in rows if r.get(k) is not None], [r[k] for r in rows if r.get(k) is not None])
              for k in CURVE_KEYS]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for ax, (key, xs, ys) in zip(axes.flat, panels):
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None)
        ax.set_title(f"{stage}: {key}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out / f"curves_{stage}.png")


def lineage_mermaid(manifest: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """A mermaid flowchart: base model → stages along their model/data edges, labelled with the kind."""
    kinds = {s["name"]: s["kind"] for s in summary.get("stages", [])}
    lines = ["```mermaid", "flowchart LR", "  base([base model])"]
    lines += [f"  {n}[\"{n}<br/>{k}\"]" for n, k in kinds.items()]
    for name, st in manifest.get("stages", {}).items():
        model = (st.get("inputs") or {}).get("model", {}).get("ref")
        if model == "base" or model in kinds:
            lines.append(f"  {model} -->|model| {name}")
        for d in (st.get("inputs") or {}).get("data", []):
            if d.get("stage"):
                lines.append(f"  {d['stage']} -.->|{d.get('output', 'data')}| {name}")
    lines.append("```")
    return lines


def write_run_report(out: str | Path) -> Path:
    out = Path(out)
    if not (out / "summary.json").exists():
        raise RLVRError(f"{out}: no summary.json (is this the output_dir of `rlvr run`?)")
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
    inv = (manifest.get("invocations") or [{}])[-1]
    lines = [f"# Run report: {summary.get('run')}", "",
             f"Status: **{summary.get('status')}** · wall time {summary.get('wall_s', 0):.0f} s · seed "
             f"{manifest.get('seed')} · code {inv.get('git_commit') or 'unknown'}"
             f"{' (uncommitted changes)' if inv.get('git_dirty') else ''} · recipe {manifest.get('recipe')} "
             f"(digest {manifest.get('recipe_digest')})", ""]

    lines += ["## Lineage", ""] + lineage_mermaid(manifest, summary) + [""]
    for name, st in manifest.get("stages", {}).items():
        inp = st.get("inputs") or {}
        data = ", ".join(d.get("stage") and f"{d['stage']}:{d.get('output')}" or d.get("source") or d.get("file", "?")
                         for d in inp.get("data", []))
        prompts = ", ".join(p["source"] + (f" ×{p['weight']}" if p.get("weight") else "") for p in inp.get("prompts", []))
        lines.append(f"- **{name}** ({st.get('kind')}, fingerprint `{st.get('fingerprint')}`, seed {st.get('seed')}): "
                     f"model ← {inp.get('model', {}).get('ref')}" + (f"; data ← {data}" if data else "")
                     + (f"; prompts ← {prompts}" if prompts else ""))
    lines.append("")

    evals = _eval_rows(summary)
    if evals:
        ks = _k_keys(evals)
        lines += ["## Evaluation (held-out)", "", "| model | greedy pass@1 | sampled pass@1 | " + " | ".join(ks) + " |",
                  "|---|---|---|" + "---|" * len(ks)]
        for name, m in evals:
            greedy = m.get("greedy_pass@1", m.get("pass@1") if "sampled_pass@1" in m else None)
            sampled = m.get("sampled_pass@1", m.get("pass@1") if "greedy_pass@1" in m else None)
            lines.append(f"| {name} | {_pct(greedy)} | {_pct(sampled)} | " + " | ".join(_pct(m.get(k)) for k in ks) + " |")
        png = plot_eval(out, evals)
        lines += ["", f"![eval]({png.name})" if png else "", ""]

    lines += ["## Stages", "", "| stage | kind | status | wall s | metrics |", "|---|---|---|---|---|"]
    for s in summary.get("stages", []):
        shown = {k: v for k, v in (s.get("metrics") or {}).items() if isinstance(v, (int, float))
                 and not isinstance(v, bool) and not k.startswith(("pass@", "maj@", "sampled_")) and k != "wall_s"}
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(shown.items())[:8])
        wall = s.get("wall_s")
        lines.append(f"| {s['name']} | {s['kind']} | {s['status']}{': ' + s['error'] if s.get('error') else ''} | "
                     f"{'' if wall is None else f'{wall:.0f}'} | {text} |")
    lines.append("")
    curves = [p for s in summary.get("stages", []) if (p := plot_stage_curves(out, s["name"])) is not None]
    if curves:
        lines += ["## Curves", ""] + [f"![{p.stem}]({p.name})" for p in curves] + [""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
