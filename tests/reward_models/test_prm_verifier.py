"""verifiers/prm.py: step splitting, aggregation, dense per-step rewards, the scorer and the `prm` verifier
(through its scoring server, alone and mixed with a rule-based verifier in a Task)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from rlvr.models.tiny import build_tiny_tokenizer
from verifiers.base import VerifyContext, get_verifier
from verifiers.prm import PRMScorer, aggregate, dense_rewards, split_steps, step_end_tokens, step_spans

SPLITS = [
    ("a=1\nb=2\n\n  c=3  \n", "newline", None, ["a=1", "b=2", "c=3"]),
    ("first line\nsame para\n\nsecond para\n \nthird", "paragraph", None,
     ["first line\nsame para", "second para", "third"]),
    ("intro\nStep 1: x=1\nmore\nstep 2. y=2\n## Step 3) z", "step_k", None,
     ["intro", "Step 1: x=1\nmore", "step 2. y=2", "## Step 3) z"]),
    ("x=1 ки y=2 ки z=3 ки", "separator", " ки", ["x=1", "y=2", "z=3"]),
    ("", "newline", None, []),
    ("   \n\n", "paragraph", None, []),
    ("no markers at all", "step_k", None, ["no markers at all"]),
]


@pytest.mark.parametrize("text,how,sep,expected", SPLITS)
def test_split_steps_table(text, how, sep, expected):
    assert split_steps(text, how, sep) == expected
    for (a, b), step in zip(step_spans(text, how, sep), expected):
        assert text[a:b] == step


def test_split_errors():
    with pytest.raises(KeyError, match="unknown step split 'lines'; known: newline"):
        split_steps("x", "lines")
    with pytest.raises(ValueError, match="separator"):
        split_steps("x", "separator")


@pytest.mark.parametrize("how,expected", [("min", 0.5), ("prod", 0.36), ("mean", 2.2 / 3), ("last", 0.8),
                                          ("sum", math.log(0.9) + math.log(0.5) + math.log(0.8))])
def test_aggregate_by_hand(how, expected):
    assert aggregate([0.9, 0.5, 0.8], how) == pytest.approx(expected, abs=1e-12)


def test_aggregate_errors_and_zero():
    with pytest.raises(ValueError, match="at least one step"):
        aggregate([], "min")
    with pytest.raises(KeyError, match="unknown aggregation 'max'"):
        aggregate([0.5], "max")
    assert aggregate([0.0, 1.0], "sum") == pytest.approx(math.log(1e-12))   # clamped, not -inf


def _bpe_tokenizer():
    """A small byte-level BPE (multi-character tokens) built in memory, wrapped as an HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["step one: add 12 and 30\n", "step two: the total is 42\n\n", "so the answer is 42"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("make_tok", [build_tiny_tokenizer, _bpe_tokenizer])
def test_dense_rewards_land_on_each_steps_last_token(make_tok):
    tok = make_tok()
    text = "step one: add 12 and 30\nstep two: the total is 42\n\nso the answer is 42"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    spans = step_spans(text, "newline")
    ends = step_end_tokens(tok, ids, [b for _, b in spans])
    for (a, b), t in zip(spans, ends):
        # token t completes the step's last character; token t-1 does not yet
        assert len(tok.decode(ids[:t + 1], skip_special_tokens=True)) >= b
        assert t == 0 or len(tok.decode(ids[:t], skip_special_tokens=True)) < b
    R = dense_rewards(tok, [ids, ids[:3]], [[0.9, 0.2, 0.7], [0.5]], split="newline")
    assert R.shape == (2, len(ids)) and R.dtype == torch.float32
    assert torch.nonzero(R[0]).flatten().tolist() == ends and R[0, ends].tolist() == pytest.approx([0.9, 0.2, 0.7])
    assert R[1].sum().item() == pytest.approx(0.5)          # a 3-token prefix: one step, its value at its end
    # fewer values than steps: aligned to the last steps
    R2 = dense_rewards(tok, [ids], [[0.25]], split="newline", length=len(ids) + 5)
    assert R2.shape == (1, len(ids) + 5) and R2[0, ends[-1]].item() == 0.25 and R2.sum().item() == 0.25


# ---------------------------------------------------------------------------------------- with a trained PRM
def test_scorer_matches_trainer_encoding(trained_prm):
    """The scorer's probabilities are the trainer's sigmoid(step logits) for the same steps."""
    from rlvr.trainers.prm import encode_steps, step_logits

    _, out = trained_prm
    scorer = PRMScorer(str(out / "model"), batch_size=2)
    prompts, responses = ["start 2", "start 4", "start 1"], ["2+3=5\n5-1=4", "4+1=5\n5-2=1", "1+1=2"]
    got = scorer.step_probs(prompts, responses)
    for p, r, probs in zip(prompts, responses, got):
        ids, ends = encode_steps(scorer.tokenizer, p, r.split("\n"), "\n", 64)
        with torch.no_grad():
            want = torch.sigmoid(step_logits(scorer.model, [ids], [ends], 0)[0]).tolist()
        assert probs == pytest.approx(want, abs=1e-5)
    assert scorer.step_probs(["start 1"], ["  \n"]) == [[]]
    assert scorer.score(["start 1", "start 1"], ["1+1=2", ""], how="prod")[1] is None


def test_prm_flags_the_wrong_step(trained_prm):
    _, out = trained_prm
    scorer = PRMScorer(str(out / "model"))
    right, wrong = scorer.step_probs(["start 2", "start 2"], ["2+3=5\n5-1=4", "2+3=5\n5-1=2"])
    assert right[1] > 0.5 > wrong[1]


def test_prm_verifier_in_a_task_with_a_rule_based_verifier(trained_prm):
    """The `prm` verifier runs in the pool's workers, which ask the shared scoring server; a Task mixes it with
    the `integer` verifier by weight."""
    from tasks.base import Example, Task, WeightedVerifier

    _, out = trained_prm
    prm = get_verifier("prm", model=str(out / "model"), how="min")
    task = Task(name="chains", loader=lambda split, limit: [], verifiers=[
        WeightedVerifier(get_verifier("integer", pick="last"), 1.0), WeightedVerifier(prm, 0.5)])
    examples = [Example("a", "start 2", gold="4"), Example("b", "start 2", gold="4"), Example("c", "start 2", "4")]
    responses = ["2+3=5\n5-1=4", "2+3=5\n5-1=2", ""]
    scores = task.score(responses, examples, timeout=60)
    direct = prm.score_batch(responses, [task.context(e) for e in examples])
    for s, d in zip(scores, direct):
        v = s.verdicts["prm"]
        assert v.status == d.status and v.reward == pytest.approx(d.reward, abs=1e-6)
        assert s.reward == pytest.approx(s.verdicts["integer"].reward + 0.5 * v.reward, abs=1e-6)
    assert [s.verdicts["prm"].status for s in scores] == ["correct", "wrong", "unparseable"]
    assert scores[0].verdicts["prm"].info["step_scores"][1] > 0.5
    # the same model and options reuse one server
    again = get_verifier("prm", model=str(out / "model"), how="sum")
    assert again.address == prm.address
    dead = copy.copy(prm)
    dead.authkey = b"not the key"
    assert dead("2+3=5", VerifyContext(prompt="start 2")).status == "error"
