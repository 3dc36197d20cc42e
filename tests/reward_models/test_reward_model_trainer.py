"""Bradley-Terry reward-model trainer: data formats, the K-wise loss against a loop, truncation, the value-head
model's save/load, a tiny RM that learns a preference, and resume after a stop."""
from __future__ import annotations

import gzip
import json
import math
import random

import pytest
import torch

from rlvr.errors import DataError
from rlvr.models.tiny import build_tiny_tokenizer
from rlvr.models.value_head import ValueHeadModel, load_value_model
from rlvr.trainers.logger import read_jsonl
from rlvr.trainers.reward_model import (PreferenceGroup, RMConfig, encode_sequence, group_loss, read_preferences,
                                        split_holdout, train_reward_model)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_pairs_rankings_and_hh_dialogues(tmp_path):
    f = _write(tmp_path / "p.jsonl", [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        {"prompt": "q ", "chosen": "good", "rejected": "bad", "margin": 2},
        {"prompt": "q ", "ranked": ["a", "b", "c"]},
        {"chosen": "no dialogue here", "rejected": "none"},
    ])
    g = read_preferences([f])
    assert g[0] == PreferenceGroup("\n\nHuman: hi\n\nAssistant:", (" hello!", " go away"))
    assert g[1] == PreferenceGroup("q ", ("good", "bad"), 2.0)
    assert g[2] == PreferenceGroup("q ", ("a", "b", "c"))
    assert g[3] == PreferenceGroup("", ("no dialogue here", "none"))


@pytest.mark.parametrize("row,match", [
    ({"chosen": "x"}, "needs 'chosen' and 'rejected', or 'ranked'"),
    ({"ranked": ["only one"]}, "'ranked' must be a list of >= 2 strings"),
    ({"chosen": "a", "rejected": 3}, "must be strings"),
    ({"chosen": "a", "rejected": "b", "margin": "big"}, "'margin' must be a number"),
])
def test_bad_records_name_file_and_line(tmp_path, row, match):
    f = _write(tmp_path / "bad.jsonl", [{"chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{match}"):
        read_preferences([f])


def test_bad_json_and_gzip(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"chosen": "a", "rejected": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: invalid JSON"):
        read_preferences([f])
    gz = tmp_path / "y.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
    assert read_preferences([gz]) == [PreferenceGroup("", ("a", "b"))]


def test_group_loss_equals_a_loop():
    rng = random.Random(0)
    sizes = [2, 3, 4, 2]
    rewards = torch.tensor([rng.gauss(0, 2) for _ in range(sum(sizes))], dtype=torch.float64)
    rewards[1] = rewards[0]                                      # a tie: counts 1/2 in accuracy
    margins = torch.tensor([0.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    cfg = RMConfig(margin=0.25, center_coef=0.1)
    loss, st = group_loss(rewards, sizes, margins, cfg, num_groups=len(sizes))
    want, correct, pairs, off = 0.0, 0.0, 0, 0
    for g, k in enumerate(sizes):
        for i in range(k):
            for j in range(i + 1, k):
                rc, rr = rewards[off + i].item(), rewards[off + j].item()
                d = rc - rr - margins[g].item() - 0.25
                term = math.log1p(math.exp(-d)) + 0.1 * (rc + rr) ** 2
                want += term / (math.comb(k, 2) * len(sizes))
                correct += 1.0 if rc > rr else 0.5 if rc == rr else 0.0
                pairs += 1
        off += k
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert st["pairs"] == pairs and st["correct"] == correct


def test_group_loss_gradient_pushes_chosen_up():
    r = torch.zeros(3, requires_grad=True)
    loss, _ = group_loss(r, [3], torch.zeros(1), RMConfig(), num_groups=1)
    loss.backward()
    assert r.grad[0] < 0 < r.grad[2] and r.grad[1].abs() < 1e-7    # best up, worst down, middle balanced


def test_encode_sequence_keeps_the_end():
    tok = build_tiny_tokenizer()
    ids = encode_sequence(tok, "abcdefgh", max_length=4)
    assert tok.decode(ids[:-1]) == "fgh" and ids[-1] == tok.eos_token_id


def test_split_holdout_is_seeded_and_disjoint():
    a = split_holdout(100, 0.2, seed=3)
    assert a == split_holdout(100, 0.2, seed=3) and a != split_holdout(100, 0.2, seed=4)
    assert len(a[1]) == 20 and not set(a[0]) & set(a[1]) and sorted(a[0] + a[1]) == list(range(100))


def test_value_head_save_load_roundtrip(small_lm, tmp_path):
    from rlvr.trainers.checkpoint import CheckpointManager

    model, tok = load_value_model(str(small_lm), meta={"kind": "reward"})
    torch.nn.init.normal_(model.head.weight)
    ids = torch.tensor([tok("hello there")["input_ids"]], device=model.head.weight.device)
    before = model(ids)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again = ValueHeadModel.from_pretrained(tmp_path / "m").to(ids.device)
    assert again.meta == {"kind": "reward"} and torch.allclose(again(ids), before, atol=1e-6)
    # the shared CheckpointManager restores a value-head model (backbone + head keys) unchanged
    ckpt = CheckpointManager(tmp_path / "run").save(1, model)
    fresh, _ = load_value_model(str(small_lm))
    CheckpointManager(tmp_path / "run").restore(CheckpointManager(tmp_path / "run").latest(), fresh)
    assert ckpt.exists() and torch.allclose(fresh(ids), before, atol=1e-6)
    with pytest.raises(Exception, match="is a 'reward' model, expected a 'prm' model"):
        load_value_model(str(tmp_path / "m"), expect_kind="prm")


def test_tiny_rm_learns_a_preference(trained_rm):
    summary, out = trained_rm
    print(f"\ntiny RM (polite > rude): held-out pairwise accuracy {summary['eval/pairwise_accuracy']:.3f} on "
          f"{summary['eval_groups']} pairs, {summary['steps']} steps in {summary['wall_s']:.1f}s")
    assert summary["eval/pairwise_accuracy"] >= 0.9 and summary["eval_groups"] == 80
    rows = read_jsonl(out / "rm_metrics.jsonl")
    assert {"loss/rm", "rm/accuracy", "rm/margin_mean", "grad/norm", "eval/pairwise_accuracy"} <= set(rows[-1])
    assert rows[-1]["loss/rm"] < rows[0]["loss/rm"]


def test_rankings_train_and_resume_equals_uninterrupted(small_lm, tmp_path):
    rng = random.Random(1)
    rows = [{"prompt": f"{i} ", "ranked": ["!" * 3, "!" * 2, "!"][: rng.randint(2, 3)]} for i in range(40)]
    data = _write(tmp_path / "ranked.jsonl", rows)

    def cfg(out, steps):
        return RMConfig(model=str(small_lm), data=[str(data)], output_dir=str(out), max_steps=steps, batch_size=6,
                        micro_batch=3, lr=1e-3, eval_every=2, checkpoint_every=2, max_length=32, bf16=False,
                        center_coef=0.01)

    quiet = lambda s: None  # noqa: E731
    train_reward_model(cfg(tmp_path / "a", 4), log_fn=quiet)
    train_reward_model(cfg(tmp_path / "b", 2), log_fn=quiet)
    train_reward_model(cfg(tmp_path / "b", 4), resume=True, log_fn=quiet)

    def stable(rs):
        return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rs]

    a, b = (read_jsonl(tmp_path / d / "rm_metrics.jsonl") for d in "ab")
    assert [r["step"] for r in b] == [1, 2, 3, 4] and stable(a) == stable(b)
    assert (tmp_path / "b" / "model" / "value_head.json").exists()
