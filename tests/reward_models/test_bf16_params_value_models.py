"""Reward models and PRMs with bf16 parameters + fp32 master weights (rlvr.distributed.bf16_params): they learn,
their saved weights stay fp32, and a resumed run equals the uninterrupted one."""
from __future__ import annotations

import json

import pytest

from rlvr.trainers.logger import read_jsonl
from tests.reward_models.conftest import preference_rows


def _stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rows]


@pytest.mark.parametrize("kind", ["rm", "prm"])
def test_bf16_params_learn_and_resume(small_lm, tmp_path, kind):
    from rlvr.trainers.prm import PRMConfig, SyntheticConfig, train_prm
    from rlvr.trainers.reward_model import RMConfig, train_reward_model

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(120)))

    def run(out, steps, resume=False):
        common = dict(model=str(small_lm), output_dir=str(out), max_steps=steps, batch_size=16, micro_batch=8,
                      lr=3e-3, eval_every=3, checkpoint_every=3, max_length=64, bf16_params=True)
        if kind == "rm":
            return train_reward_model(RMConfig(data=[str(data)], **common), resume=resume, log_fn=lambda s: None)
        return train_prm(PRMConfig(synthetic=SyntheticConfig(n=200, max_value=5), **common), resume=resume,
                         log_fn=lambda s: None)

    run(tmp_path / "a", 12)
    run(tmp_path / "b", 6)
    run(tmp_path / "b", 12, resume=True)
    a, b = (read_jsonl(tmp_path / d / f"{kind}_metrics.jsonl") for d in "ab")
    loss = f"loss/{kind}"
    assert len(a) == 12 and sum(r[loss] for r in a[-3:]) < sum(r[loss] for r in a[:3])
    assert _stable(a) == _stable(b)
    from safetensors import safe_open
    with safe_open(str(next((tmp_path / "a" / "model").glob("*.safetensors"))), "pt") as f:
        assert all(f.get_tensor(k).dtype.is_floating_point and f.get_tensor(k).element_size() == 4
                   for k in f.keys())
