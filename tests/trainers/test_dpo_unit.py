"""Offline DPO trainer: data parsing, loss adapters vs the pure formulas, log-prob plumbing, the reference
cache, every loss moving the tiny model the right way, resume, and the NaN guard."""
from __future__ import annotations

import json

import pytest
import torch

from rlvr.algos import dpo_loss, ipo_loss, kto_loss, kto_reference_point, orpo_loss, simpo_loss
from rlvr.config import validate
from rlvr.errors import ConfigError, DataError
from rlvr.trainers import dpo as D
from rlvr.trainers.common import NonFiniteError, completion_logprobs, load_model_and_tokenizer, pack
from rlvr.trainers.logger import read_jsonl


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model_and_tokenizer("tiny")


def fresh(tiny):
    import copy
    return copy.deepcopy(tiny[0]), tiny[1]


# ----------------------------------------------------------------------------------------------------- data
def write(tmp_path, rows, name="prefs.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_read_and_encode_pairs_and_unpaired(tmp_path, tiny):
    _, tok = tiny
    p = write(tmp_path, [{"prompt": "1 + 1 =", "chosen": "2", "rejected": "3"},
                         {"prompt": [{"role": "user", "content": "2 + 2"}], "chosen": [{"role": "assistant",
                                                                                       "content": "4"}],
                          "rejected": "5"}])
    recs = D.read_preference_records(p)
    items = D.encode_records(recs, tok, 64, paired=True)
    eos = tok.eos_token_id
    assert items[0] == D.PrefItem(tuple(tok("1 + 1 =")["input_ids"]), (tok("2")["input_ids"][0], eos),
                                  (tok("3")["input_ids"][0], eos))
    # no chat template on the tiny tokenizer: the documented plain layout
    assert tok.decode(list(items[1].prompt)) == "user: 2 + 2\nassistant: "
    # the same pairs as KTO items: chosen desirable, rejected not; second row = the next item's completion
    kto = D.encode_records(recs, tok, 64, paired=False)
    assert [it.desirable for it in kto] == [True, False, True, False]
    assert [it.second for it in kto] == [kto[1].first, kto[2].first, kto[3].first, kto[0].first]


def test_unpaired_records_and_errors(tmp_path, tiny):
    _, tok = tiny
    p = write(tmp_path, [{"prompt": "a", "completion": "b", "label": True},
                         {"prompt": "a", "completion": "c", "label": False}])
    items = D.encode_records(D.read_preference_records(p), tok, 64, paired=False)
    assert [it.desirable for it in items] == [True, False]
    with pytest.raises(DataError, match="loss=kto"):
        D.encode_records(D.read_preference_records(p), tok, 64, paired=True)
    bad = write(tmp_path, [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}],
                "bad.jsonl")
    with pytest.raises(DataError, match=r"bad.jsonl:2: needs 'prompt'"):
        D.read_preference_records(bad)
    lab = write(tmp_path, [{"prompt": "a", "completion": "b", "label": "yes"}], "lab.jsonl")
    with pytest.raises(DataError, match=r"lab.jsonl:1: 'label' must be true or false"):
        D.read_preference_records(lab)
    msg = write(tmp_path, [{"prompt": [{"role": "user"}], "chosen": "b", "rejected": "c"}], "msg.jsonl")
    with pytest.raises(DataError, match=r"msg.jsonl:1: 'prompt' must be"):
        D.encode_records(D.read_preference_records(msg), tok, 64, paired=True)


def test_truncation_keeps_the_end_of_the_prompt(tiny):
    _, tok = tiny
    items = D.encode_records([("x:1", {"prompt": "abcdefghij", "chosen": "12", "rejected": "3"})], tok,
                             max_length=6, paired=True)
    it = items[0]
    assert tok.decode(list(it.prompt)) == "hij" and len(it.prompt) + len(it.first) == 6


# -------------------------------------------------------------------------------------------------- config
def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="dpo: loss: .*unknown preference loss .nope.; known: cdpo, dpo"):
        validate(D.DPOConfig, {"loss": "nope"}, where="dpo")
    with pytest.raises(ConfigError, match="label_smoothing > 0"):
        validate(D.DPOConfig, {"loss": "cdpo"}, where="dpo")
    assert validate(D.DPOConfig, {"loss": "cdpo", "label_smoothing": 0.1}).loss == "cdpo"
    assert set(D.PREFERENCE_LOSSES.names()) >= {"dpo", "cdpo", "ipo", "kto", "orpo", "simpo"}


# ---------------------------------------------------------------------------------------- loss adapters
def stats(desirable=(True, False)):
    logps = torch.tensor([[-5.0, -7.0], [-4.0, -3.0]], dtype=torch.float64)
    avg = logps / torch.tensor([[2.0, 3.0], [4.0, 1.0]], dtype=torch.float64)
    ref = torch.tensor([[-6.0, -6.5], [-4.5, -2.0]], dtype=torch.float64)
    return D.SeqStats(logps, avg, ref, torch.tensor(desirable))


@pytest.mark.parametrize("name,expected", [
    ("dpo", lambda s, c: dpo_loss(s.logps[:, 0], s.logps[:, 1], s.ref_logps[:, 0], s.ref_logps[:, 1], c.beta)),
    ("cdpo", lambda s, c: dpo_loss(s.logps[:, 0], s.logps[:, 1], s.ref_logps[:, 0], s.ref_logps[:, 1], c.beta,
                                   label_smoothing=0.2)),
    ("ipo", lambda s, c: ipo_loss(s.logps[:, 0], s.logps[:, 1], s.ref_logps[:, 0], s.ref_logps[:, 1], c.beta)),
    ("simpo", lambda s, c: simpo_loss(s.avg_logps[:, 0], s.avg_logps[:, 1], c.beta, c.simpo_gamma)),
    ("orpo", lambda s, c: orpo_loss(s.avg_logps[:, 0], s.avg_logps[:, 1], -s.avg_logps[:, 0], c.orpo_lambda)),
    ("kto", lambda s, c: kto_loss(s.logps[:, 0], s.ref_logps[:, 0], s.desirable,
                                  kto_reference_point(s.logps[:, 1], s.ref_logps[:, 1]), c.beta)),
])
def test_adapters_call_the_pure_formulas(name, expected):
    cfg = D.DPOConfig(loss=name, beta=0.3, label_smoothing=0.2 if name == "cdpo" else 0.0)
    s = stats()
    loss, metrics = D.get_preference_loss(name).fn(s, cfg)
    assert torch.allclose(loss, expected(s, cfg))
    assert all(torch.as_tensor(v).ndim == 0 for v in metrics.values())


def test_dpo_metrics_hand_computed():
    # β(π - ref): chosen [0.3·1, 0.3·0.5], rejected [0.3·(-0.5), 0.3·(-1)]
    _, m = D.get_preference_loss("dpo").fn(stats(), D.DPOConfig(beta=0.3))
    assert m["rewards/chosen"].item() == pytest.approx(0.3 * 0.75)
    assert m["rewards/rejected"].item() == pytest.approx(0.3 * -0.75)
    assert m["rewards/margins"].item() == pytest.approx(0.45)
    assert m["rewards/accuracies"].item() == 1.0


# ----------------------------------------------------------------------------------------- log-probs
@pytest.mark.parametrize("share", [False, True])
def test_sequence_logps_match_unbatched_forward(tiny, share):
    model, tok = tiny
    items = [D.PrefItem((5, 6, 7), (8, 9, 2), (10, 2)), D.PrefItem((11,), (12, 13, 14, 2), (15, 16, 2))]
    logps, avg = D.sequence_logps(model, items, tok.pad_token_id, share_prompts=share)
    for i, it in enumerate(items):
        for j, comp in enumerate((it.first, it.second)):
            lp, _ = completion_logprobs(model, pack([list(it.prompt)], [list(comp)], tok.pad_token_id))
            assert logps[i, j].item() == pytest.approx(lp.sum().item(), abs=1e-4)
            assert avg[i, j].item() == pytest.approx(lp.sum().item() / len(comp), abs=1e-4)


def test_reference_cache_hits_and_invalidates(tiny, tmp_path, monkeypatch):
    model, tok = fresh(tiny)
    items = [D.PrefItem((5, 6), (7, 2), (8, 2))]
    calls = []
    real = D.reference_logps
    monkeypatch.setattr(D, "reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = D.DPOConfig(bf16=False)
    cache = tmp_path / "ref.pt"
    a = D.cached_reference_logps(model, items, tok.pad_token_id, cfg, cache, log_fn=lambda s: None)
    b = D.cached_reference_logps(model, items, tok.pad_token_id, cfg, cache, log_fn=lambda s: None)
    assert len(calls) == 1 and torch.equal(a, b)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    D.cached_reference_logps(model, items, tok.pad_token_id, cfg, cache, log_fn=lambda s: None)
    assert len(calls) == 2            # other weights -> other fingerprint -> recomputed
    D.cached_reference_logps(model, items + items, tok.pad_token_id, cfg, cache, log_fn=lambda s: None)
    assert len(calls) == 3            # other data -> recomputed
    D.cached_reference_logps(model, items + items, tok.pad_token_id, cfg.model_copy(update={
        "share_prompt_forward": not cfg.share_prompt_forward}), cache, log_fn=lambda s: None)
    assert len(calls) == 4            # other float summation order -> recomputed


# ------------------------------------------------------------------------------------------- training
TOY = [("1 + 1 =", "2", "7"), ("2 + 3 =", "5", "9"), ("4 + 4 =", "8", "1"), ("3 + 0 =", "3", "6")]


def toy_items(tok, paired=True):
    recs = [(f"toy:{i}", {"prompt": p, "chosen": c, "rejected": r}) for i, (p, c, r) in enumerate(TOY)]
    return D.encode_records(recs, tok, 32, paired=paired)


def margin(model, tok, items):
    with torch.no_grad():
        logps, avg = D.sequence_logps(model, items, tok.pad_token_id)
    return float((logps[:, 0] - logps[:, 1]).mean())


@pytest.mark.parametrize("loss", ["dpo", "cdpo", "ipo", "kto", "orpo", "simpo"])
def test_every_loss_moves_chosen_above_rejected(tiny, tmp_path, loss):
    model, tok = fresh(tiny)
    spec = D.get_preference_loss(loss)
    items = toy_items(tok, paired=spec.paired)
    pairs = toy_items(tok)
    before = margin(model, tok, pairs)
    cfg = D.DPOConfig(loss=loss, beta=0.5, label_smoothing=0.1 if loss == "cdpo" else 0.0, steps=6,
                      batch_size=len(items), micro_batch=4, lr=3e-3, bf16=False, checkpoint_every=0)
    D.train_dpo(model, tok, items, cfg, out_dir=tmp_path, log_fn=lambda s: None)
    assert margin(model, tok, pairs) > before + 1.0
    rows = read_jsonl(tmp_path / "dpo_metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert "rewards/chosen" in rows[-1] and "grad/norm" in rows[-1]
    if spec.needs_reference:
        assert "logps/drift" in rows[-1] and (tmp_path / "ref_logps.pt").exists()
        assert rows[0]["logps/drift"] == pytest.approx(0.0, abs=1e-5)     # step 1: policy == reference


def test_live_reference_equals_precomputed(tiny, tmp_path):
    out = {}
    for pre in (True, False):
        model, tok = fresh(tiny)
        cfg = D.DPOConfig(steps=3, batch_size=2, micro_batch=2, lr=1e-3, bf16=False, precompute_ref=pre,
                          checkpoint_every=0)
        D.train_dpo(model, tok, toy_items(tok), cfg, out_dir=tmp_path / str(pre), log_fn=lambda s: None)
        out[pre] = [r["loss/total"] for r in read_jsonl(tmp_path / str(pre) / "dpo_metrics.jsonl")]
    assert out[True] == pytest.approx(out[False], abs=1e-5)


def test_resume_reproduces_an_uninterrupted_run(tiny, tmp_path):
    def run(out, steps, resume):
        torch.manual_seed(0)
        model, tok = fresh(tiny)
        cfg = D.DPOConfig(steps=steps, batch_size=2, micro_batch=1, lr=1e-3, bf16=False, checkpoint_every=1)
        D.train_dpo(model, tok, toy_items(tok), cfg, out_dir=out, resume=resume, log_fn=lambda s: None)
        return model

    straight = run(tmp_path / "a", 4, False)
    run(tmp_path / "b", 2, False)                           # "crash" after step 2 (checkpoint at 2)
    resumed = run(tmp_path / "b", 4, True)
    for (k, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), k
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
    assert strip(read_jsonl(tmp_path / "a" / "dpo_metrics.jsonl")) == \
        strip(read_jsonl(tmp_path / "b" / "dpo_metrics.jsonl"))


def test_nan_guard_names_last_good_checkpoint(tiny, tmp_path):
    if "test_nan_after_2" not in D.PREFERENCE_LOSSES:
        calls = {"n": 0}

        @D.register_preference_loss("test_nan_after_2", needs_reference=False)
        def _nan(s, cfg):
            calls["n"] += 1
            loss = -s.avg_logps[:, 0]
            return (loss * float("nan") if calls["n"] > 2 else loss), {}

    model, tok = fresh(tiny)
    cfg = D.DPOConfig(loss="test_nan_after_2", steps=5, batch_size=2, micro_batch=2, bf16=False,
                      checkpoint_every=1)
    with pytest.raises(NonFiniteError, match=r"dpo step 3: preference loss is nan.*step-00000002"):
        D.train_dpo(model, tok, toy_items(tok), cfg, out_dir=tmp_path, log_fn=lambda s: None)


def test_empty_data_is_an_error(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(DataError, match="no preference items"):
        D.train_dpo(model, tok, [], D.DPOConfig(), out_dir=tmp_path)


def test_rpo_adds_the_chosen_nll(tiny, tmp_path):
    model, tok = fresh(tiny)
    items = toy_items(tok)
    with torch.no_grad():
        logps, avg = D.sequence_logps(model, items, tok.pad_token_id)
    base = D.dpo_loss(logps[:, 0], logps[:, 1], logps[:, 0], logps[:, 1], 0.1)      # step 1: policy == ref
    cfg = D.DPOConfig(steps=1, batch_size=len(items), micro_batch=len(items), bf16=False, rpo_alpha=0.5,
                      checkpoint_every=0)
    D.train_dpo(model, tok, items, cfg, out_dir=tmp_path, log_fn=lambda s: None)
    row = read_jsonl(tmp_path / "dpo_metrics.jsonl")[0]
    assert row["loss/rpo_nll"] == pytest.approx(float(-avg[:, 0].mean()), rel=1e-5)
    assert row["loss/total"] == pytest.approx(float((base - 0.5 * avg[:, 0]).mean()), rel=1e-5)


def test_kto_reference_point_is_per_step_not_per_micro_batch(tmp_path, tiny):
    """KTO's z0 is estimated on the whole batch: the gradient of one step must not depend on how the step is
    split into micro-batches (a per-micro-batch z0 would change it)."""
    model0, tok = fresh(tiny)
    recs = [{"prompt": f"{a} + {a} =", "completion": c, "label": lab}
            for a, c, lab in [(1, "2", True), (2, "5", False), (3, "6", True), (4, "1", False), (5, "10", True),
                              (6, "13", False)]]
    items = D.encode_records(D.read_preference_records(write(tmp_path, recs)), tok, 64, paired=False)
    # Move the policy off the reference so that z0 > 0 and the gap varies by item: two Adam steps towards the
    # items' own completions (digits + EOS) raise the mismatched completions' log-probs too. (A random weight
    # perturbation lowers a random-init model's log-probs as often as it raises them, which clamps z0 to 0.)
    opt = torch.optim.Adam(model0.parameters(), lr=1e-3)
    for _ in range(2):
        own, _ = D.sequence_logps(model0, items, tok.pad_token_id, False)
        (-own[:, 0].sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    ref = D.reference_logps(tiny[0], items, tok.pad_token_id, 8, False)
    spec = D.get_preference_loss("kto")
    grads = []
    for micro in (1, 2, 6):
        import copy
        model = copy.deepcopy(model0)
        cfg = D.DPOConfig(loss="kto", micro_batch=micro, bf16=False, beta=0.5)
        D._step(model, items, list(range(6)), ref, spec, cfg, tok.pad_token_id)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    z0 = D._step_reference_point(model0, items, list(range(6)), ref, cfg, tok.pad_token_id)
    logps, _ = D.sequence_logps(model0, items, tok.pad_token_id, False)
    assert float(z0) == pytest.approx(float(kto_reference_point(logps[:, 1], ref[:, 1].to(logps.device))), abs=1e-5) and float(z0) > 0
    assert torch.allclose(grads[0], grads[2], atol=1e-6) and torch.allclose(grads[1], grads[2], atol=1e-6)
