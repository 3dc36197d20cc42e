"""`kind: dpo` — offline preference optimisation (DPO/IPO/KTO/ORPO/SimPO) on pair files or a stage's
`pairs` output; with no `data`, online / iterative DPO (or SPIN) sampling from the policy on `prompts`."""
from __future__ import annotations

from rlvr.trainers.online_dpo import OnlineDPOConfig
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import scalars


def _check(spec, where: str) -> None:
    if not spec.data and not spec.prompts:
        raise ValueError(f"{where}: kind dpo needs `data` (offline pairs) or `prompts` (online rounds)")


@register_stage("dpo", OnlineDPOConfig, check=_check, collective=True)
def run_dpo(ctx, cfg: OnlineDPOConfig) -> StageResult:
    """Offline when `data` is given (the `dpo:` sub-config is the loss/optimiser), else online rounds."""
    from rlvr.trainers import dpo, online_dpo

    model, tok = ctx.load_model(train=True)
    common = dict(out_dir=ctx.dir, seed=ctx.seed, evaluate=ctx.train_eval(tok), resume=True, name="dpo",
                  log_fn=ctx.log, dist=ctx.dist)
    if ctx.spec.data:
        records = []
        for d in ctx.spec.data:
            records += dpo.read_preference_records(ctx.data_file(d), d.limit)
        paired = dpo.get_preference_loss(cfg.dpo.loss).paired
        items = dpo.encode_records(records, tok, cfg.dpo.max_length, paired)
        summary = dpo.train_dpo(model, tok, items, cfg.dpo, **common)
        n = {"pairs": len(records)}
    else:
        task, examples = ctx.prompts()
        summary = online_dpo.train_online_dpo(model, tok, ctx.engine(model, tok), task, examples, cfg, **common)
        n = {"prompts": len(examples)}
    return StageResult({**scalars(summary), **n}, ctx.save_model(model, tok))
