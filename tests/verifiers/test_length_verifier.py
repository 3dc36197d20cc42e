"""`length`: DAPO soft overlong punishment and target-distance penalty, hand-computed."""
from __future__ import annotations

import pytest

from verifiers.base import VerifyContext, get_verifier
from verifiers.length import LengthVerifier, dapo_overlong, target_distance


@pytest.mark.parametrize("length, expected", [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0),
                                              (150, -1.0)])
def test_dapo_formula(length, expected):
    # L_max = 100, L_cache = 20: zero up to 80, then (80 - L) / 20, then -1 past 100
    assert dapo_overlong(length, max_len=100, cache_len=20) == pytest.approx(expected)


@pytest.mark.parametrize("length, expected", [(100, 0.0), (150, -0.5), (40, -0.6), (300, -1.0), (0, -1.0)])
def test_target_formula(length, expected):
    assert target_distance(length, target=100) == pytest.approx(expected)


def test_uses_num_tokens_when_set_else_estimates():
    v = LengthVerifier(max_len=100, cache_len=20)
    out = v("x" * 10, VerifyContext(num_tokens=90))
    assert (out.reward, out.status, out.info["length"], out.info["estimated"]) == (-0.5, "wrong", 90, False)
    est = v("x" * 360, VerifyContext())                                   # ceil(360 / 4) = 90 tokens
    assert (est.reward, est.info["length"], est.info["estimated"]) == (-0.5, 90, True)
    ok = v("short", VerifyContext(num_tokens=50))
    assert (ok.reward, ok.status) == (0.0, "correct")


def test_chars_unit_and_target_mode():
    v = get_verifier("length", mode="target", target=10, unit="chars")
    assert v("x" * 15, VerifyContext(num_tokens=10)).reward == pytest.approx(-0.5)   # chars, not tokens


@pytest.mark.parametrize("options, match", [({"mode": "cubic"}, "mode"), ({"unit": "words"}, "unit"),
                                            ({"max_len": 10, "cache_len": 20}, "cache_len")])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        get_verifier("length", **options)
