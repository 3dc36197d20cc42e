"""`repetition`: n-gram repetition penalty, hand-computed."""
from __future__ import annotations

import pytest

from verifiers.base import VerifyContext, get_verifier
from verifiers.repetition import RepetitionVerifier, repeated_fraction

CTX = VerifyContext()


def test_hand_computed_bigrams():
    # "a b a b a b": bigrams ab ba ab ba ab -> 5 total, 2 distinct -> repeated 1 - 2/5 = 0.6
    assert repeated_fraction("a b a b a b".split(), 2) == pytest.approx(0.6)
    v = RepetitionVerifier(n=2)("A b a B a b", CTX)                  # lower-cased before counting
    assert v.reward == pytest.approx(-0.6) and v.status == "wrong"


def test_no_repetition_and_short_text():
    v = RepetitionVerifier()("the quick brown fox jumps over the lazy dog", CTX)
    assert (v.reward, v.status) == (0.0, "correct")
    assert repeated_fraction(["a", "b"], 3) == 0.0                    # fewer words than n


def test_chars_penalty_scale_and_tolerance():
    # chars "aaaa", n = 2: aa aa aa -> 3 total, 1 distinct -> 2/3 repeated
    v = get_verifier("repetition", n=2, unit="chars", max_penalty=-0.5)("aaaa", CTX)
    assert v.reward == pytest.approx(-1 / 3)
    # 1 - 9/10 = 0.1 repeated trigrams: within the default tolerance of 0.1
    text = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w1 w2 w3"
    assert repeated_fraction(text.split(), 3) == pytest.approx(0.1)
    assert RepetitionVerifier()(text, CTX).status == "correct"
    with pytest.raises(ValueError, match="max_penalty"):
        RepetitionVerifier(max_penalty=1.0)
