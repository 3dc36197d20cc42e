"""`kind: rm` (Bradley-Terry reward model) and `kind: prm` (process reward model) as stages.

The stage supplies `model` (the trunk to put the head on), `data` and `output_dir`; the rest of the trainer's
config comes from the stage's `config:`. An RM stage's model can then score a source at RL time
(`sources.<name>.reward_model: <rm stage>`). With LoRA (the stage's or run's `lora:`, or `config.lora`) the
trunk trains adapters, the head fully, and the stage's model is saved merged."""
from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from rlvr.trainers.prm import PRMConfig
from rlvr.trainers.reward_model import RMConfig
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import needs_data, scalars


def _files(ctx) -> list[str]:
    """Pair files for the trainer: stage `pairs` outputs are re-keyed on the raw question (what the RM
    verifier sees at RL time); user files are used as they are."""
    from rlvr.workflow.datasets import rm_pairs_file
    out = []
    for i, d in enumerate(ctx.spec.data):
        path = ctx.data_file(d)
        out.append(str(rm_pairs_file(path, ctx.dir / f"rm_data_{i}.jsonl") if d.stage else path))
    return out


def _lora(ctx, cfg):
    """LoRA for the trunk: the stage config's own `lora:` when given, else the stage's / run's `lora:` section."""
    return cfg.lora if "lora" in cfg.model_fields_set else ctx.lora


@register_stage("rm", RMConfig, check=needs_data, produces_model=False, collective=True)
def run_rm(ctx, cfg: RMConfig) -> StageResult:
    """Train a BT reward model on the stage's pair data; reports held-out pairwise accuracy."""
    from rlvr.trainers.reward_model import train_reward_model
    cfg = cfg.model_copy(update={"model": ctx.model_path(), "data": _files(ctx), "output_dir": str(ctx.dir),
                                 "seed": ctx.seed, "lora": _lora(ctx, cfg)})
    summary = train_reward_model(cfg, resume=True, log_fn=ctx.log, dist=ctx.dist)
    return StageResult(scalars(summary), summary["model"])


class PRMStageConfig(PRMConfig):
    """PRMConfig whose data may come from the stage's `data` entries instead of `data:` in the config."""

    @model_validator(mode="after")
    def _check(self) -> "PRMStageConfig":
        return self


@register_stage("prm", PRMStageConfig, produces_model=False, collective=True)
def run_prm(ctx, cfg: PRMStageConfig) -> StageResult:
    """Train a process reward model on step-labelled files (stage `data`) or the config's synthetic chains."""
    from rlvr.errors import ConfigError
    from rlvr.trainers.prm import train_prm
    files = [str(ctx.data_file(d)) for d in ctx.spec.data] or list(cfg.data)
    if not files and cfg.synthetic is None:
        raise ConfigError(f"stages.{ctx.spec.name}: a prm stage needs `data` files or config.synthetic")
    full = PRMConfig.model_validate({**cfg.model_dump(), "model": ctx.model_path(), "data": files,
                                     "output_dir": str(ctx.dir), "seed": ctx.seed,
                                     "lora": _lora(ctx, cfg).model_dump()})
    summary = train_prm(full, resume=True, log_fn=ctx.log, dist=ctx.dist)
    return StageResult(scalars(summary), summary.get("model") or str(Path(ctx.dir) / "model"))
