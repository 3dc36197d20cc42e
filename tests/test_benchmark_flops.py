"""benchmarks/grpo_step.py's FLOP count of the training passes, against a count by hand on the tiny model."""
from __future__ import annotations

import importlib.util
import sys

from tests.test_recipes import REPO


def load_grpo_step():
    spec = importlib.util.spec_from_file_location("grpo_step", REPO / "benchmarks" / "grpo_step.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["grpo_step"] = mod   # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_train_flop_by_hand():
    from rlvr.trainers.common import load_model_and_tokenizer, pack

    model, tok = load_model_and_tokenizer("tiny")
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (128, 4, 384)
    packed = pack([[5, 6, 7], [5]], [[8, 9], [10, 11, 12, 13]], tok.pad_token_id)   # B=2, P=3, C=4: T=7
    per_layer = 4 * 128 * 128 + 3 * 128 * 384            # q, k, v, o (no GQA) + gate, up, down
    fwd = (2 * 4 * per_layer * 2 * 7                      # linear layers over all 14 positions
           + 4 * 7 * 7 * 128 * 4 * 2                      # scores and values: 2·2·T²·d per layer and sequence
           + 2 * c.vocab_size * 128 * 2 * 5)              # lm head on the C+1 kept rows
    assert load_grpo_step().train_flop(model, packed) == 4 * fwd   # reference forward + policy fwd/bwd (3x)


def test_train_flop_by_hand_with_shared_prompts():
    from rlvr.trainers.common import load_model_and_tokenizer, pack

    model, tok = load_model_and_tokenizer("tiny")
    c = model.config
    # micro-batches of 3 rows: {0, 1, 2} hold 2 distinct prompts and share; {3, 4} are distinct: plain pass
    packed = pack([[5, 6, 7], [5, 6, 7], [5], [5, 6], [5]], [[8, 9], [10, 11, 12, 13], [1], [2], [3]],
                  tok.pad_token_id)
    P, C = 3, 4
    per_layer = 4 * 128 * 128 + 3 * 128 * 384
    positions = (2 * P + 3 * (C - 1)) + 2 * (P + C)
    pairs = (2 * P * P + 3 * (C - 1) * (P + C - 1)) + 2 * (P + C) ** 2
    rows = (2 + 3 * (C - 1)) + 2 * (C + 1)
    fwd = 2 * 4 * per_layer * positions + 4 * 128 * 4 * pairs + 2 * c.vocab_size * 128 * rows
    assert load_grpo_step().train_flop(model, packed, micro_batch=3) == 4 * fwd
