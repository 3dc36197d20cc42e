"""A misspelt algorithm name is one config error before anything runs (rlvr train and rlvr run)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rlvr.algos.registry import check_algorithm_names
from rlvr.errors import ConfigError
from rlvr.trainers.grpo import GRPOConfig
from rlvr.trainers.ppo import PPOConfig

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("field, bad, known", [("advantage", "grpoo", "dr_grpo"), ("policy_loss", "gspoo", "cispo"),
                                               ("kl_estimator", "k4", "k3"), ("loss_agg", "tok_mean", "token_mean")])
def test_unknown_names_name_their_field(field, bad, known):
    check_algorithm_names(GRPOConfig(), "grpo")                          # the defaults are all registered
    with pytest.raises(ConfigError, match=rf"^grpo\.{field}: unknown .*'{bad}'; known: .*{known}"):
        check_algorithm_names(GRPOConfig(**{field: bad}), "grpo")


def test_ppo_config_is_checked_too():
    with pytest.raises(ConfigError, match=r"^ppo\.policy_loss"):
        check_algorithm_names(PPOConfig(policy_loss="nope"), "ppo")


def test_train_and_run_fail_before_any_stage(tmp_path, capsys):
    from rlvr.cli import main

    out = tmp_path / "run"
    assert main(["train", str(RECIPES / "r1_mini.yaml"), f"output_dir={out}", "grpo.policy_loss=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    from rlvr.algos import list_policy_losses
    known = sorted(list_policy_losses())             # other tests in this process may have registered more
    assert {"cispo", "gspo", "ppo_clip"} <= set(known)
    assert err[-1] == f"rlvr train: error: grpo.policy_loss: unknown policy loss 'nope'; known: {', '.join(known)}"
    assert not (out / "sft").exists() and not list(out.glob("**/*.safetensors"))
    assert main(["run", str(RECIPES / "r1_mini_full.yaml"), "stages.rl_all.config.advantage=nope", "--dry-run"]) == 2
    assert "stages.rl_all.config.advantage: unknown advantage estimator 'nope'" in capsys.readouterr().err
