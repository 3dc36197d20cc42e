"""`rlvr train-rm` / `rlvr train-prm`: 2-step smoke runs of both recipes on the tiny model (the HH-RLHF path
prints its held-out pairwise accuracy), and one-line errors for bad configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main

REPO = Path(__file__).resolve().parents[2]


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_rm_hh_recipe_smoke(shared_data, tmp_path, capsys):
    hh = shared_data / "hh_rlhf"
    code = main(["train-rm", str(REPO / "recipes/rm_hh.yaml"), f"output_dir={tmp_path}",
                 f"data=[{hh / 'helpful-base/test.jsonl.gz'}, {hh / 'harmless-base/test.jsonl.gz'}]",
                 "data_limit=60", "max_steps=2", "batch_size=4", "micro_batch=4", "max_length=96",
                 "eval_every=0", "warmup_steps=0"])
    summary = _last_json(capsys.readouterr().out)
    assert code == 0 and summary["steps"] == 2 and summary["eval_groups"] == 12
    print(f"\nHH-RLHF slice, tiny RM after 2 steps: held-out pairwise accuracy "
          f"{summary['eval/pairwise_accuracy']:.3f} on 12 pairs (chance level expected)")
    assert 0.0 <= summary["eval/pairwise_accuracy"] <= 1.0
    assert (tmp_path / "model" / "value_head.json").exists() and (tmp_path / "rm_summary.json").exists()


def test_prm_synthetic_recipe_smoke(tmp_path, capsys):
    code = main(["train-prm", str(REPO / "recipes/prm_synthetic.yaml"), f"output_dir={tmp_path}",
                 "synthetic.n=60", "max_steps=2", "batch_size=4", "micro_batch=4", "eval_every=0"])
    summary = _last_json(capsys.readouterr().out)
    assert code == 0 and summary["steps"] == 2 and 0.0 <= summary["eval/step_auc"] <= 1.0
    meta = json.loads((tmp_path / "model" / "value_head.json").read_text())
    assert meta["kind"] == "prm" and meta["step_separator"] == "\n"


@pytest.mark.parametrize("cmd,override,match", [
    ("train-rm", "learning_rate=1", "unknown key 'learning_rate'"),
    ("train-rm", "eval_fraction=1.5", "eval_fraction must be in [0, 1)"),
    ("train-rm", "data=[/nonexistent/pairs.jsonl]", "/nonexistent/pairs.jsonl: file not found"),
    ("train-prm", "neutral=sometimes", "neutral"),
    ("train-prm", "model=./no-such-model-dir", "no such directory"),
])
def test_bad_configs_are_one_line(cmd, override, match, capsys, tmp_path):
    recipe = "rm_hh.yaml" if cmd == "train-rm" else "prm_synthetic.yaml"
    assert main([cmd, str(REPO / "recipes" / recipe), override, f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
