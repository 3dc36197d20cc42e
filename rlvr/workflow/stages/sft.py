"""`kind: sft` — supervised fine-tuning on a mix of labelled sources, stage datasets and files."""
from __future__ import annotations

from rlvr.trainers.sft import SFTConfig, train_sft
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import needs_data, scalars


@register_stage("sft", SFTConfig, check=needs_data, collective=True)
def run_sft(ctx, cfg: SFTConfig) -> StageResult:
    """Completion-only SFT from `model` on `data` (mixed by weight); evals on the run's eval source drive
    `stop_at_pass1` and `eval_every`."""
    model, tok = ctx.load_model(train=True)
    examples = ctx.sft_examples(tok)
    ctx.log(f"{ctx.spec.name}: {len(examples)} SFT examples")
    summary = train_sft(model, tok, examples, cfg, out_dir=ctx.dir, seed=ctx.seed, evaluate=ctx.train_eval(tok),
                        resume=True, name="sft", log_fn=ctx.log, dist=ctx.dist)
    return StageResult({**scalars(summary), "examples": len(examples)}, ctx.save_model(model, tok))
