"""`kind: eval` — evaluate a model on one or more prompt sources (greedy pass@1, sampled pass@k, maj@k)."""
from __future__ import annotations

from rlvr.config import Config
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import needs_prompts


class EvalStageConfig(Config):
    limit: int | None = 200
    """prompts per source (None: all)"""
    n: int = 8
    """samples per prompt"""
    ks: list[int] = [1, 8]
    """k values for pass@k / maj@k"""
    temperature: float = 1.0
    """sampling temperature for the sampled metrics"""
    max_new_tokens: int = 64
    """completion budget"""
    greedy: bool = True
    """also report greedy pass@1 (as `pass@1`; the sampled one is `sampled_pass@1`)"""


@register_stage("eval", EvalStageConfig, check=needs_prompts, produces_model=False)
def run_eval(ctx, cfg: EvalStageConfig) -> StageResult:
    """Each prompt source is evaluated on its own split; several sources → metrics prefixed `<source>/`."""
    from rlvr.eval import evaluate, greedy_pass_at_1
    from rlvr.workflow.runner import HEADLINE

    model, tok = ctx.load_model()
    engine = ctx.engine(model, tok)
    out: dict = {}
    for ref in ctx.spec.prompts:
        task, src = ctx.run.task(ref.source), ctx.run.wf.sources[ref.source]
        m = evaluate(task, engine, n=cfg.n, ks=cfg.ks, split=src.split, limit=cfg.limit,
                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, tokenizer=tok,
                     out_dir=ctx.dir / ref.source, seed=ctx.seed, progress=False)
        row = {("sampled_pass@1" if k == "pass@1" else k): v["value"] for k, v in m.items()
               if HEADLINE.match(k) and isinstance(v, dict) and "value" in v}
        if cfg.greedy:
            row["pass@1"] = greedy_pass_at_1(task, engine, split=src.split, limit=cfg.limit, tokenizer=tok,
                                             max_new_tokens=cfg.max_new_tokens)
        prefix = f"{ref.source}/" if len(ctx.spec.prompts) > 1 else ""
        out.update({prefix + k: v for k, v in row.items()})
    return StageResult(out)
