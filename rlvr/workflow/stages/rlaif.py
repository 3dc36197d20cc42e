"""`kind: rlaif` — Constitutional AI data from the stage's model (rlvr.trainers.rlaif): sample a response per
prompt, critique and revise it under a sampled principle, and write `sft.jsonl` (prompt → revision) and
`pairs.jsonl` (revision ≻ original); with a `judge`, also sample two responses per prompt and let the judge
label them (`judged.jsonl`, RLAIF). Downstream `sft` / `dpo` / `rm` stages read these by `output` name."""
from __future__ import annotations

from pathlib import Path

from rlvr.trainers.rlaif import RLAIFConfig
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import needs_prompts


class RLAIFStageConfig(RLAIFConfig):
    constitution: str = "recipes/constitution.yaml"
    """constitution file (YAML principles, or one principle per line)"""
    response_max_new_tokens: int = 128
    """budget of the initial responses (and of the judged pair samples)"""
    response_temperature: float = 1.0
    """sampling temperature of the initial responses"""
    judge: str | None = None
    """AI judge for `judged.jsonl`: `self` (the stage's model) or a model dir; None: no judged pairs"""


def _sample(engine, prompts, n: int, cfg: RLAIFStageConfig, seed: int) -> list[list[str]]:
    from rlvr.rollout import SamplingParams
    params = SamplingParams(n=n, temperature=cfg.response_temperature, max_new_tokens=cfg.response_max_new_tokens,
                            seed=seed)
    return [[r.text for r in g] for g in engine.generate(prompts, params)]


@register_stage("rlaif", RLAIFStageConfig, check=needs_prompts, produces_model=False)
def run_rlaif(ctx, cfg: RLAIFStageConfig) -> StageResult:
    """Critique → revision data (and optional AI-judge pairs) from the stage model on its prompt sources."""
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.rlaif import (critique_and_revise, label_pairs, load_constitution, model_scorer,
                                     revision_pairs, write_jsonl)

    principles = load_constitution(cfg.constitution)
    model, tok = ctx.load_model()
    engine = ctx.engine(model, tok)
    task, examples = ctx.prompts()
    prompts = [task.render(e, tok) for e in examples]
    responses = [g[0] for g in _sample(engine, prompts, 1, cfg, ctx.seed)]
    revisions = critique_and_revise(engine, prompts, responses, principles, cfg, seed=ctx.seed + 1)
    pairs = revision_pairs(revisions)
    sft = [{"prompt": p["prompt"], "completion": p["chosen"], "principle": p["principle"]} for p in pairs]
    out = Path(ctx.dir)
    datasets = {"sft": str(write_jsonl(out / "sft.jsonl", sft)), "pairs": str(write_jsonl(out / "pairs.jsonl", pairs))}
    metrics = {"prompts": len(prompts), "revised": len(pairs), "unchanged_or_empty": len(prompts) - len(pairs)}
    if cfg.judge is not None:
        jm, jt = (model, tok) if cfg.judge == "self" else load_model_and_tokenizer(cfg.judge)
        two = _sample(engine, prompts, 2, cfg, ctx.seed + 2)
        items = [(p, a, b) for p, (a, b) in zip(prompts, two) if a.strip() != b.strip()]
        judged = label_pairs(model_scorer(jm, jt), items, principles, cfg, seed=ctx.seed + 3)
        datasets["judged"] = str(write_jsonl(out / "judged.jsonl", judged))
        metrics.update({"judged_pairs": len(judged),
                        "judge_confidence": sum(j["confidence"] for j in judged) / max(1, len(judged))})
    ctx.log(f"{ctx.spec.name}: {len(pairs)} revision pairs from {len(prompts)} prompts")
    return StageResult(metrics, None, datasets)
