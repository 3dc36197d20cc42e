"""`kind: rejection_sampling` — sample N completions per prompt from a model, keep the verified-correct ones
(every `require`d verifier correct too, duplicates dropped, optionally the shortest k) and write them as an SFT
dataset with provenance; also write preference pairs (a kept sample vs a failed one) for DPO / reward models.

Outputs in the stage dir: `sft.jsonl`, `pairs.jsonl` (formats in rlvr.workflow.datasets). Sampling runs in
chunks of `batch_prompts` prompts, each seeded and written to `chunks/` as it finishes, so a killed stage
resumes at the first missing chunk and produces the same files as an uninterrupted run.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from rlvr.config import Config
from rlvr.workflow.datasets import write_jsonl
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import needs_prompts


class RejectionSamplingConfig(Config):
    n: int = 8
    """samples per prompt"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling"""
    max_new_tokens: int = 256
    """completion budget; truncated samples are never kept"""
    batch_prompts: int = 64
    """prompts per generate call (one resumable chunk)"""
    require: list[str] = []
    """verifier names that must also say `correct` (e.g. [format]) besides the task's primary verifier"""
    dedupe: bool = True
    """drop repeated completions of the same prompt (whitespace-normalised)"""
    keep_per_prompt: int | None = None
    """keep at most this many per prompt (None: all that pass)"""
    prefer: Literal["shortest", "random"] = "shortest"
    """which ones to keep when capped: the shortest (R1 favours concise traces) or a seeded random choice"""
    pairs_per_prompt: int = 1
    """preference pairs written per prompt (kept sample vs failed sample); 0: none"""
    verify_timeout: float = 5.0
    """per-call verifier deadline (seconds)"""


def _norm(text: str) -> str:
    return " ".join(text.split())


def select(samples: list[dict[str, Any]], cfg: RejectionSamplingConfig, rng: random.Random) -> list[dict[str, Any]]:
    """The kept samples of one prompt: passing, not truncated, deduplicated, capped by `prefer`."""
    ok = [s for s in samples if s["passed"]]
    if cfg.dedupe:
        seen, uniq = set(), []
        for s in ok:
            if (key := _norm(s["completion"])) not in seen:
                seen.add(key)
                uniq.append(s)
        ok = uniq
    if cfg.keep_per_prompt is not None and len(ok) > cfg.keep_per_prompt:
        ok = sorted(ok, key=lambda s: (s["num_tokens"], s["sample"])) if cfg.prefer == "shortest" else \
            rng.sample(ok, len(ok))
        ok = ok[:cfg.keep_per_prompt]
    return ok


def _chunk(ctx, task, examples, tok, engine, cfg, i: int) -> list[dict[str, Any]]:
    from rlvr.rollout import SamplingParams
    params = SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, seed=ctx.seed * 1000 + i)
    prompts = [task.render(e, tok) for e in examples]
    groups = engine.generate(prompts, params)
    flat = [r for g in groups for r in g]
    scores = task.score([r.text for r in flat], [e for e in examples for _ in range(cfg.n)],
                        truncated=[r.truncated for r in flat], num_tokens=[r.num_tokens for r in flat],
                        timeout=cfg.verify_timeout)
    rows = []
    for j, (ex, prompt) in enumerate(zip(examples, prompts)):
        samples = []
        for k in range(cfg.n):
            r, s = flat[j * cfg.n + k], scores[j * cfg.n + k]
            passed = s.correct and not r.truncated and all(
                name in s.verdicts and s.verdicts[name].status == "correct" for name in cfg.require)
            samples.append({"sample": k, "completion": r.text, "num_tokens": r.num_tokens, "reward": s.reward,
                            "status": s.status, "passed": passed})
        rows.append({"id": ex.id, "question": ex.question, "source": ex.meta.get("_source"), "prompt": prompt,
                     "samples": samples})
    return rows


@register_stage("rejection_sampling", RejectionSamplingConfig, check=needs_prompts, produces_model=False)
def run_rejection_sampling(ctx, cfg: RejectionSamplingConfig) -> StageResult:
    """Sample, verify, keep the correct (clean, unique, shortest-k) completions → sft.jsonl + pairs.jsonl."""
    from rlvr.trainers.checkpoint import atomic_write_text

    model, tok = ctx.load_model()
    engine = ctx.engine(model, tok)
    task, examples = ctx.prompts()
    chunks = Path(ctx.dir) / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i, start in enumerate(range(0, len(examples), cfg.batch_prompts)):
        path = chunks / f"{i:05d}.jsonl"
        if path.exists():
            part = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            part = _chunk(ctx, task, examples[start:start + cfg.batch_prompts], tok, engine, cfg, i)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in part))
            ctx.log(f"{ctx.spec.name}: {min(start + cfg.batch_prompts, len(examples))}/{len(examples)} prompts")
        rows += part

    rng = random.Random(ctx.seed)
    sft, pairs, n_samples, n_passed, covered = [], [], 0, 0, 0
    model_path = ctx.model_path()
    for row in rows:
        n_samples += len(row["samples"])
        n_passed += sum(s["passed"] for s in row["samples"])
        kept = select(row["samples"], cfg, rng)
        covered += bool(kept)
        prov = {"question": row["question"], "source": row["source"], "example_id": row["id"],
                "model": model_path, "stage": ctx.spec.name}
        sft += [{"prompt": row["prompt"], "completion": s["completion"], **prov, "sample": s["sample"],
                 "reward": s["reward"]} for s in kept]
        failed = [s for s in row["samples"] if not s["passed"]]
        for s_ok, s_bad in list(zip(kept, failed))[:cfg.pairs_per_prompt]:
            pairs.append({"prompt": row["prompt"], "chosen": s_ok["completion"], "rejected": s_bad["completion"],
                          **prov, "chosen_reward": s_ok["reward"], "rejected_reward": s_bad["reward"]})
    sft_path = write_jsonl(Path(ctx.dir) / "sft.jsonl", sft)
    pairs_path = write_jsonl(Path(ctx.dir) / "pairs.jsonl", pairs)
    metrics = {"prompts": len(rows), "samples": n_samples, "pass_rate": n_passed / max(1, n_samples),
               "prompt_coverage": covered / max(1, len(rows)), "kept": len(sft), "pairs": len(pairs),
               "kept_per_prompt": len(sft) / max(1, len(rows))}
    ctx.log(f"{ctx.spec.name}: kept {len(sft)} of {n_samples} samples ({100 * metrics['pass_rate']:.1f}% passed), "
            f"{len(pairs)} pairs")
    return StageResult(metrics, None, {"sft": str(sft_path), "pairs": str(pairs_path)})
