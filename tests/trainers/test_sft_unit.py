"""SFT pieces: completion-only masks, deterministic data order, threshold stop."""
from __future__ import annotations

import pytest
import torch

from rlvr.trainers.sft import SFTConfig, SFTExample, batch_indices, collate, tokenize_pairs, train_sft


@pytest.fixture(scope="module")
def tiny():
    from rlvr.trainers.common import load_model_and_tokenizer
    return load_model_and_tokenizer("tiny")


def test_completion_only_mask_covers_completion_and_eos(tiny):
    _, tok = tiny
    (ids, mask), = tokenize_pairs([SFTExample("12+3=", "15")], tok, 64, completion_only=True)
    assert tok.decode(ids[:5]) == "12+3=" and ids[-1] == tok.eos_token_id
    assert mask == [False] * 5 + [True] * 3
    (_, full), = tokenize_pairs([SFTExample("12+3=", "15")], tok, 64, completion_only=False)
    assert all(full)
    batch = collate([(ids, mask)], tok.pad_token_id)
    assert batch["labels"][0].tolist() == [-100] * 5 + ids[5:]


def test_batch_indices_are_epoch_permutations_and_deterministic():
    a = [batch_indices(10, s, 4, seed=1) for s in range(5)]
    flat = [i for b in a for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert a == [batch_indices(10, s, 4, seed=1) for s in range(5)]
    assert a != [batch_indices(10, s, 4, seed=2) for s in range(5)]


def test_stops_on_eval_threshold(tiny, tmp_path):
    model, tok = tiny
    scores = iter([0.1, 0.3, 0.9, 0.9])
    cfg = SFTConfig(max_steps=50, batch_size=4, eval_every=2, stop_at_pass1=0.25, lr=1e-3)
    out = train_sft(model, tok, [SFTExample("1+1=", "2")] * 8, cfg, out_dir=tmp_path,
                    evaluate=lambda m: next(scores), log_fn=lambda s: None)
    assert out["steps"] == 4 and out["stopped_on_threshold"] and out["final_pass@1"] == 0.3
    assert (tmp_path / "checkpoints" / "step-00000004").exists()


def test_sft_lowers_loss(tiny, tmp_path):
    from rlvr.trainers.common import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer("tiny")
    ex = [SFTExample(f"{a}+{b}=", str(a + b)) for a in range(5) for b in range(5)]
    train_sft(model, tok, ex, SFTConfig(max_steps=30, batch_size=25, lr=3e-3, eval_every=0), out_dir=tmp_path,
              log_fn=lambda s: None)
    from rlvr.trainers.logger import read_jsonl
    rows = read_jsonl(tmp_path / "sft_metrics.jsonl")
    assert rows[-1]["loss/sft"] < 0.5 * rows[0]["loss/sft"]


def test_eval_schedule_densifies_near_threshold():
    from rlvr.trainers.sft import _eval_due
    cfg = SFTConfig(max_steps=100, eval_every=10, eval_every_near=2, stop_at_pass1=0.2, near_fraction=0.5)
    assert [s for s in range(1, 25) if _eval_due(cfg, s, [(10, 0.05)])] == [10, 20]
    assert [s for s in range(21, 27) if _eval_due(cfg, s, [(20, 0.12)])] == [22, 24, 26]
    assert _eval_due(cfg, 100, [(99, 0.0)])                     # always at the last step
    assert not any(_eval_due(cfg.model_copy(update={"eval_every": 0}), s, []) for s in range(1, 50))


def test_pack_groups_first_fit_hand_computed():
    from rlvr.trainers.sft import pack_groups
    # capacity 8: 5 opens row 0 (room 3), 3 fills it, 4 opens row 1 (room 4), 2 joins it (room 2),
    # 9 is too long for any row and gets its own, 1 goes to the first row with room: row 1
    assert pack_groups([5, 3, 4, 2, 9, 1], 8) == [[0, 1], [2, 3, 5], [4]]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_loss_and_grads_equal_unpacked(attn):
    """Same examples, packed into fewer rows: same summed NLL, token count and gradients (fp32, to ~1e-5), so no
    token attends across an example boundary and no loss term reads the previous example."""
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.sft import collate_packed, sft_loss

    model, tok = load_model_and_tokenizer("tiny", attn_implementation=attn)
    g = torch.Generator().manual_seed(0)
    pairs = [SFTExample(f"{a}+{b}=", str(a + b)) for a, b in torch.randint(0, 999, (24, 2), generator=g).tolist()]
    for completion_only in (True, False):
        rows = tokenize_pairs(pairs, tok, 64, completion_only=completion_only)
        results = []
        for batch in (collate(rows, tok.pad_token_id), collate_packed(rows, tok.pad_token_id, 64)):
            model.zero_grad()
            nll, n = sft_loss(model, batch)
            nll.backward()
            results.append((batch["input_ids"].shape[0], nll.item(), n,
                            torch.cat([p.grad.flatten() for p in model.parameters()])))
        (rows_u, nll_u, n_u, g_u), (rows_p, nll_p, n_p, g_p) = results
        assert rows_p < rows_u // 3 and n_p == n_u
        assert nll_p == pytest.approx(nll_u, rel=1e-5)
        assert torch.allclose(g_p, g_u, atol=1e-5, rtol=1e-4)


def test_train_sft_with_packing_runs(tiny, tmp_path):
    from rlvr.trainers.common import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer("tiny")
    ex = [SFTExample(f"{a}+{b}=", str(a + b)) for a in range(5) for b in range(5)]
    out = train_sft(model, tok, ex, SFTConfig(max_steps=3, batch_size=25, eval_every=0, packing=True, max_length=64),
                    out_dir=tmp_path, log_fn=lambda s: None)
    assert out["steps"] == 3


def test_fused_adamw_is_opt_in_and_tracks_foreach(tmp_path):
    """`fused_adamw` reaches the optimizer (saved in the checkpoint's param groups); a short run's losses equal the
    default foreach run's to float rounding (the two differ only by kernel, ~1e-8 per step)."""
    from rlvr.trainers.common import load_model_and_tokenizer
    from rlvr.trainers.logger import read_jsonl

    ex = [SFTExample(f"{a}+{b}=", str(a + b)) for a in range(5) for b in range(5)]
    losses = {}
    for fused in (False, True):
        out = tmp_path / str(fused)
        model, tok = load_model_and_tokenizer("tiny")
        cfg = SFTConfig(max_steps=3, batch_size=25, lr=3e-3, eval_every=0, bf16=False, fused_adamw=fused,
                        checkpoint_every=3)
        train_sft(model, tok, ex, cfg, out_dir=out, log_fn=lambda s: None)
        groups = torch.load(next(out.glob("checkpoints/step-*")) / "optimizer.pt")["param_groups"]
        assert all(g["fused"] is (True if fused else None) and g["foreach"] is (None if fused else True)
                   for g in groups)
        losses[fused] = [r["loss/sft"] for r in read_jsonl(out / "sft_metrics.jsonl")]
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_torch_threads_applies_to_the_stage_and_its_evals_then_restores(tiny, tmp_path):
    model, tok = tiny
    before = torch.get_num_threads()
    seen = []
    cfg = SFTConfig(max_steps=2, batch_size=2, eval_every=1, lr=1e-3, torch_threads=before + 1)
    train_sft(model, tok, [SFTExample("1+1=", "2")] * 4, cfg, out_dir=tmp_path,
              evaluate=lambda m: seen.append(torch.get_num_threads()) or 0.0, log_fn=lambda s: None)
    assert seen == [before + 1, before + 1] and torch.get_num_threads() == before
    with pytest.raises(ValueError):      # restored on the error path too
        train_sft(model, tok, [], cfg, out_dir=tmp_path / "x", log_fn=lambda s: None)
    assert torch.get_num_threads() == before


def test_control_runs_with_the_process_threads_not_the_cold_starts():
    from rlvr.pipeline import control_config
    from rlvr.recipe import load_recipe
    from pathlib import Path
    recipe = load_recipe(str(Path(__file__).resolve().parents[2] / "recipes/r1_mini.yaml"), ["sft.torch_threads=2"])
    assert recipe.sft.torch_threads == 2 and control_config(recipe, 10).torch_threads is None
