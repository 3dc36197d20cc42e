"""`kind: grpo` and `kind: ppo` — on-policy RL on prompt sources; rewards route per source (verifiers or RM)."""
from __future__ import annotations

from rlvr.trainers.grpo import GRPOConfig
from rlvr.trainers.ppo import PPOConfig
from rlvr.workflow.stages import StageResult, register_stage
from rlvr.workflow.stages._common import needs_prompts, scalars


def _rl(ctx, cfg, train, name: str) -> StageResult:
    model, tok = ctx.load_model(train=True)
    task, examples = ctx.prompts()
    ctx.log(f"{ctx.spec.name}: {len(examples)} prompts from {', '.join(task.parts)}")
    summary = train(model, tok, ctx.engine(model, tok), task, examples, cfg, out_dir=ctx.dir, seed=ctx.seed,
                    evaluate=ctx.train_eval(tok), resume=True, name=name, log_fn=ctx.log, dist=ctx.dist)
    return StageResult({**scalars(summary), "prompts": len(examples)}, ctx.save_model(model, tok))


@register_stage("grpo", GRPOConfig, check=needs_prompts, collective=True)
def run_grpo(ctx, cfg: GRPOConfig) -> StageResult:
    """GRPO (and Dr. GRPO / RLOO / REINFORCE++ via `advantage`) on the stage's prompt mixture."""
    from rlvr.trainers.grpo import train_grpo
    return _rl(ctx, cfg, train_grpo, "grpo")


@register_stage("ppo", PPOConfig, check=needs_prompts, collective=True)
def run_ppo(ctx, cfg: PPOConfig) -> StageResult:
    """PPO with a critic and GAE on the stage's prompt mixture."""
    from rlvr.trainers.ppo import train_ppo
    return _rl(ctx, cfg, train_ppo, "ppo")
