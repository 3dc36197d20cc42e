"""Environments for multi-turn rollouts: the `Env` contract (reset/step), the registry, and the built-ins.

    base     Env, StepResult, register_env / make_env / list_envs, render_observation
    config   MultiTurnConfig (the recipe's `grpo.env` section)
    retry    retry / arithmetic_retry / code_retry: the task's verifier says "wrong, try again"
"""
from rlvr.envs.base import (ENVS, Env, Observation, StepResult, get_env_class, list_envs, make_env, register_env,
                            render_observation)
from rlvr.envs.config import MultiTurnConfig

__all__ = ["ENVS", "Env", "Observation", "StepResult", "get_env_class", "list_envs", "make_env", "register_env",
           "render_observation", "MultiTurnConfig"]
