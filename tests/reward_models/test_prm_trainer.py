"""PRM trainer: data formats, step encoding, AUC / first-error metrics, the tiny synthetic PRM (AUC >= 0.9),
resume after a stop, and a PRM800K slice (AUC printed)."""
from __future__ import annotations

import gzip
import itertools
import json
import math
import random

import pytest

from rlvr.errors import ConfigError, DataError
from rlvr.models.tiny import build_tiny_tokenizer
from rlvr.trainers.logger import read_jsonl
from rlvr.trainers.prm import (PRMConfig, RatedStep, StepExample, SyntheticConfig, _targets, encode_steps,
                               first_error_metrics, read_step_data, roc_auc, synthetic_chains,
                               trajectories_from_rated, train_prm)


# ------------------------------------------------------------------------------------------------------ data
def test_synthetic_chains_are_right_where_labelled_right():
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}
    chains = synthetic_chains(SyntheticConfig(n=300, max_value=9, errors="both"), seed=3)
    kinds = set()
    for ch in chains:
        prev = int(ch.question.split()[1])
        assert ch.labels.count(-1) <= 1 and (-1 not in ch.labels or ch.labels[-1] == -1)
        for step, label in zip(ch.steps, ch.labels):
            lhs, c = step.split("=")
            a, op, b = int(lhs[0]), lhs[1], int(lhs[2:])
            assert all(0 <= v <= 9 for v in (a, b, int(c)))
            ok = a == prev and ops[op](a, b) == int(c)
            assert ok == (label == 1), (ch, step)
            if not ok:
                kinds.add("operand" if a != prev else "result")
            prev = int(c)
    assert kinds == {"operand", "result"}
    rate = sum(-1 in ch.labels for ch in chains) / len(chains)
    assert 0.4 < rate < 0.6


def test_encode_steps_marks_each_step_end():
    tok = build_tiny_tokenizer()
    ids, ends = encode_steps(tok, "start 3", ["3+4=7", "7-2=5"], "\n", max_length=100)
    text = tok.decode(ids)
    assert text == "start 3\n3+4=7\n7-2=5\n"
    assert [text[e] for e in ends] == ["\n", "\n"] and ends == [13, 19]
    # Truncation keeps the last tokens: the first step's end falls off with the question.
    ids2, ends2 = encode_steps(tok, "start 3", ["3+4=7", "7-2=5"], "\n", max_length=7)
    assert tok.decode(ids2) == "\n7-2=5\n" and ends2 == [6]


def test_trajectories_fold_prefixes_and_keep_first_rating():
    rated = [RatedStep("q", (), "a", 1), RatedStep("q", ("a",), "b", -1), RatedStep("q", ("a",), "c", 1),
             RatedStep("q", ("a", "c"), "d", 0), RatedStep("q", (), "a", -1), RatedStep("r", (), "x", None)]
    got = trajectories_from_rated(rated)
    assert got == [StepExample("q", ("a", "b"), (1, -1)), StepExample("q", ("a", "c", "d"), (1, 1, 0)),
                   StepExample("r", ("x",), (None,))]


def test_neutral_ratings_map_as_configured():
    labels = (1, 0, -1, None)
    assert _targets(labels, "positive") == [1.0, 1.0, 0.0, None]
    assert _targets(labels, "negative") == [1.0, 0.0, 0.0, None]
    assert _targets(labels, "ignore") == [1.0, None, 0.0, None]


def test_native_and_bad_records(tmp_path):
    f = tmp_path / "steps.jsonl"
    f.write_text(json.dumps({"question": "q", "steps": ["a", "b"], "labels": [1, -1]}) + "\n")
    assert read_step_data([f]) == [StepExample("q", ("a", "b"), (1, -1))]
    f.write_text(json.dumps({"question": "q", "steps": ["a"], "labels": [2]}) + "\n")
    with pytest.raises(DataError, match=r"steps.jsonl:1: rating must be"):
        read_step_data([f])
    f.write_text("\n" + json.dumps({"what": 1}) + "\n")
    with pytest.raises(DataError, match=r"steps.jsonl:2: unknown step-label format"):
        read_step_data([f])
    with pytest.raises(DataError, match="file not found"):
        read_step_data([tmp_path / "missing.jsonl"])


def test_prm800k_raw_records(shared_data):
    path = shared_data / "prm800k_step_labels/raw_format_examples/tongyx361_phase1_test_example.jsonl"
    rec = json.loads(path.read_text().splitlines()[0])
    trajs = read_step_data([path])
    rated = sum(1 for st in rec["label"]["steps"] for c in st["completions"] if c["rating"] is not None)
    labelled = {(t.steps[:i + 1]) for t in trajs for i, v in enumerate(t.labels) if v is not None}
    assert len(labelled) == rated                     # every rated completion is a labelled step exactly once
    # The chosen path (chosen completion, else the human one, at each step) is one whole trajectory.
    chosen = tuple(st["completions"][st["chosen_completion"]]["text"] if st["chosen_completion"] is not None
                   else st["human_completion"]["text"] for st in rec["label"]["steps"])
    assert chosen in {t.steps for t in trajs}


def test_stepwise_layout_rows_all_land(shared_data):
    path = shared_data / "prm800k_step_labels/phase1_test.stepwise-critic.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in itertools.islice(f, 300)]
    trajs = read_step_data([path], limit=300)
    keys = {(t.question, t.steps[:i + 1]): v for t in trajs for i, v in enumerate(t.labels)}
    for r in rows:
        key = (r["instruction"], tuple(r["responses"]) + (r["next_response"],))
        assert key in keys
    assert sum(v is not None for v in keys.values()) >= 0.9 * sum(r["rating"] is not None for r in rows)


def test_config_needs_data_or_synthetic(tmp_path):
    from rlvr.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\n")
    with pytest.raises(ConfigError, match="synthetic"):
        load_config(PRMConfig, cfg)
    cfg.write_text("synthetic: {n: 10}\nneutral: maybe\n")
    with pytest.raises(ConfigError, match="neutral"):
        load_config(PRMConfig, cfg)


# ------------------------------------------------------------------------------------------------- metrics
def _auc_by_pairs(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_pair_counting(seed):
    rng = random.Random(seed)
    scores = [rng.choice([0.1, 0.2, 0.2, 0.5, 0.7, 0.9]) + (rng.random() if seed % 2 else 0) for _ in range(60)]
    labels = [rng.random() < 0.4 for _ in scores]
    assert roc_auc(scores, labels) == pytest.approx(_auc_by_pairs(scores, labels), abs=1e-12)


def test_roc_auc_edges():
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert roc_auc([0.5, 0.5], [False, True]) == 0.5
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))


def test_first_error_metrics_by_hand():
    probs = [[0.9, 0.2, 0.1], [0.9, 0.8], [0.9, 0.9, 0.3], [0.4, 0.9], [0.9, 0.9]]
    targets = [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0], [1.0, None]]
    # 1st: length mismatch -> skipped; 2nd: correct, none flagged (hit); 3rd: error at 2, flagged at 2 (hit);
    # 4th: correct but flagged at 0 (miss); 5th: has an unlabelled step -> skipped.
    probs[0] = [0.9, 0.2]
    m = first_error_metrics(probs, targets, threshold=0.5)
    assert m["eval/first_error_acc_error"] == 1.0         # trajectories 1 (error at 1, flagged 1) and 3
    assert m["eval/trajectories_error"] == 2 and m["eval/trajectories_correct"] == 2
    assert m["eval/first_error_acc_correct"] == 0.5
    assert m["eval/first_error_f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


# ------------------------------------------------------------------------------------------------ training
def test_tiny_prm_reaches_step_auc_09(trained_prm):
    summary, out = trained_prm
    print(f"\nsynthetic PRM: step AUC {summary['eval/step_auc']:.3f}, step accuracy "
          f"{summary['eval/step_accuracy']:.3f}, first-error acc (error / correct) "
          f"{summary['eval/first_error_acc_error']:.3f} / {summary['eval/first_error_acc_correct']:.3f}, "
          f"{summary['steps']} steps in {summary['wall_s']:.1f}s")
    assert summary["eval/step_auc"] >= 0.9
    assert summary["eval/steps"] > 200
    assert (out / "model" / "value_head.json").exists()
    rows = read_jsonl(out / "prm_metrics.jsonl")
    assert len(rows) == summary["steps"] and "loss/prm" in rows[0] and "eval/step_auc" in rows[-1]


def test_resume_equals_uninterrupted_run(small_lm, tmp_path):
    def cfg(out, steps):
        return PRMConfig(model=str(small_lm), synthetic=SyntheticConfig(n=200, max_value=5), output_dir=str(out),
                         max_steps=steps, batch_size=8, micro_batch=4, lr=3e-3, eval_every=2,
                         checkpoint_every=2, max_length=64, bf16=False)

    quiet = lambda s: None  # noqa: E731
    train_prm(cfg(tmp_path / "a", 4), log_fn=quiet)
    train_prm(cfg(tmp_path / "b", 2), log_fn=quiet)
    train_prm(cfg(tmp_path / "b", 4), resume=True, log_fn=quiet)

    def stable(rows):
        return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rows]

    a, b = (read_jsonl(tmp_path / d / "prm_metrics.jsonl") for d in "ab")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert stable(a) == stable(b)


def test_prm800k_slice_auc(shared_data, small_lm, tmp_path):
    """The real PRM800K step labels on a tiny model: train on most problems, report held-out step AUC."""
    from tests.reward_models.conftest import one_thread

    path = shared_data / "prm800k_step_labels/phase1_test.stepwise-critic.jsonl.gz"
    cfg = PRMConfig(model=str(small_lm), data=[str(path)], data_limit=2000, output_dir=str(tmp_path),
                    max_steps=40, batch_size=16, micro_batch=16, lr=1e-3, eval_every=0, checkpoint_every=0,
                    max_length=128, bf16=False, eval_fraction=0.25, neutral="positive")
    with one_thread():
        summary = train_prm(cfg, log_fn=lambda s: None)
    print(f"\nPRM800K slice (tiny model, {summary['train_trajectories']} train / {summary['eval_trajectories']} "
          f"held-out trajectories, {summary['steps']} steps, {summary['wall_s']:.1f}s): step AUC "
          f"{summary['eval/step_auc']:.3f} over {summary['eval/steps']:.0f} steps, first-error F1 "
          f"{summary['eval/first_error_f1']}")
    assert summary["eval/step_auc"] > 0.5
