"""pass@k / pass^k / maj@k / confidence intervals against hand values and direct formulas."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from rlvr.metrics import (ProblemOutcome, bootstrap_ci, cluster_answers, maj_at_k, maj_at_k_expected,
                          pass_at_k, pass_hat_k, summarize, wilson_interval)


# ------------------------------------------------------------------------------------------------ pass@k
@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4), (5, 2, 2, 0.7), (10, 0, 1, 0.0), (10, 0, 10, 0.0), (10, 10, 1, 1.0), (10, 10, 10, 1.0),
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (4, 1, 4, 1.0),   # n - c < k -> 1
    (4, 2, 2, 1 - 1 / 6),                              # C(2,2)/C(4,2) = 1/6
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_combinatorial_formula_on_grid():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                direct = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(direct, abs=1e-12), (n, c, k)


def test_pass_at_k_stable_for_large_n():
    # math.comb ratios of huge integers still work as a reference; the product form must not overflow.
    n, c, k = 2000, 3, 100
    direct = float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))
    assert pass_at_k(n, c, k) == pytest.approx(direct, rel=1e-10)


def test_pass_at_1_is_fraction_correct():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


@pytest.mark.parametrize("n,c,k", [(5, 2, 0), (5, 2, 6), (5, 6, 1), (5, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_bad_args(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ------------------------------------------------------------------------------------------------ pass^k
@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4), (5, 2, 2, 0.1), (5, 2, 3, 0.0), (10, 10, 10, 1.0), (10, 0, 1, 0.0), (4, 3, 2, 0.5),
])
def test_pass_hat_k_hand_values(n, c, k, expected):
    assert pass_hat_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_hat_k_matches_combinatorial_formula_on_grid():
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_hat_k(n, c, k) == pytest.approx(math.comb(c, k) / math.comb(n, k), abs=1e-12)


def test_pass_hat_k_bad_args():
    with pytest.raises(ValueError):
        pass_hat_k(3, 4, 1)


# ------------------------------------------------------------------------------------------------- maj@k
def test_maj_at_k_simple_majority():
    answers = ["3", "4", "4", "5"]
    correct = [True, False, False, False]
    assert maj_at_k(answers, correct, 4) == 0.0          # "4" wins, wrong
    assert maj_at_k(answers, correct, 1) == 1.0          # first sample only
    assert maj_at_k(["7", "7", "1"], [True, True, False], 3) == 1.0


def test_maj_at_k_tie_goes_to_first_seen_answer():
    assert maj_at_k(["a", "b", "b", "a"], [True, False, False, True], 4) == 1.0   # a seen first
    assert maj_at_k(["b", "a", "a", "b"], [False, True, True, False], 4) == 0.0   # b seen first


def test_maj_at_k_none_never_wins_unless_all_none():
    answers = [None, None, None, "2"]
    assert maj_at_k(answers, [False, False, False, True], 4) == 1.0
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    assert maj_at_k([None, "x"], [False, False], 1) == 0.0          # first sample alone is unparseable


def test_maj_at_k_equivalence_clusters():
    def numeric_eq(a: str, b: str) -> bool:
        return Fraction(a) == Fraction(b)                 # "0.5" == "1/2"

    answers = ["0.5", "1/3", "1/2", "0.3333", "2/4"]
    correct = [True, False, True, False, True]
    assert maj_at_k(answers, correct, 5, equivalent=numeric_eq) == 1.0   # {0.5, 1/2, 2/4} wins 3 votes
    assert cluster_answers(answers) == [0, 1, 2, 3, 4]
    assert cluster_answers(answers, numeric_eq) == [0, 1, 0, 2, 0]
    wrong_first = ["1/3", "0.5", "1/2", "0.2"]
    flags = [False, True, True, False]
    assert maj_at_k(wrong_first, flags, 4) == 0.0          # equality: 4-way tie, "1/3" seen first
    assert maj_at_k(wrong_first, flags, 4, equivalent=numeric_eq) == 1.0


def test_maj_at_k_equivalent_that_raises_means_not_equal():
    def boom(a, b):
        raise RuntimeError("bad compare")

    assert cluster_answers(["x", "x"], boom) == [0, 1]


def test_maj_unhashable_answers_cluster_by_equality():
    assert cluster_answers([[1, 2], [1, 2], [3]]) == [0, 0, 1]


def test_maj_cluster_is_correct_if_any_member_verified():
    # Second "42" timed out in the verifier (not correct) but the answer is the same as a correct one.
    assert maj_at_k(["42", "42", "7"], [True, False, False], 3) == 1.0


def test_maj_at_k_expected_exact_equals_subset_average():
    answers = ["a", "b", "a", None, "b", "a"]
    correct = [True, False, True, False, False, True]
    for k in range(1, 7):
        subsets = list(itertools.combinations(range(6), k))
        manual = sum(maj_at_k([answers[i] for i in s], [correct[i] for i in s], k) for s in subsets)
        assert maj_at_k_expected(answers, correct, k) == pytest.approx(manual / len(subsets))
    assert maj_at_k_expected(answers, correct, 6) == maj_at_k(answers, correct, 6)


def test_maj_at_k_expected_sampled_is_seeded_and_close():
    answers = [str(i % 3) for i in range(30)]
    correct = [a == "0" for a in answers]
    exact = maj_at_k_expected(answers, correct, 3, max_subsets=10 ** 6)
    approx = maj_at_k_expected(answers, correct, 3, max_subsets=500, seed=1)
    assert approx == maj_at_k_expected(answers, correct, 3, max_subsets=500, seed=1)
    assert approx == pytest.approx(exact, abs=0.08)


def test_maj_at_k_bad_args():
    with pytest.raises(ValueError):
        maj_at_k(["a"], [True, False], 1)
    with pytest.raises(ValueError):
        maj_at_k(["a"], [True], 2)


# ---------------------------------------------------------------------------------------------------- CIs
def test_wilson_hand_value():
    lo, hi = wilson_interval(5, 10)        # textbook: 0.2366, 0.7634 at 95%
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


def test_bootstrap_ci_seeded_and_contains_mean():
    scores = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1] * 3
    a = bootstrap_ci(scores, seed=3)
    assert a == bootstrap_ci(scores, seed=3)
    assert a[0] < sum(scores) / len(scores) < a[1]
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)


# ----------------------------------------------------------------------------------------------- summarize
def test_summarize_values_and_keys():
    problems = [ProblemOutcome(correct=(True, False, False, True), answers=("1", "2", "2", "1")),
                ProblemOutcome(correct=(False, False, False, False), answers=("3", None, "4", "3")),
                ProblemOutcome(correct=(True, True, True, True), answers=("5", "5", "5", "5"))]
    out = summarize(problems, [1, 2, 4])
    assert out["num_problems"] == 3 and out["samples_per_problem"] == 4
    assert out["pass@1"]["value"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert out["pass@2"]["value"] == pytest.approx((pass_at_k(4, 2, 2) + 0 + 1) / 3)
    assert out["pass^2"]["value"] == pytest.approx((pass_hat_k(4, 2, 2) + 0 + 1) / 3)
    assert out["maj@4"]["value"] == pytest.approx((1 + 0 + 1) / 3)       # 1-vs-2 tie: "1" seen first
    assert out["accuracy"]["value"] == pytest.approx(6 / 12)
    for key in ("pass@1", "maj@2_avg", "accuracy"):
        lo, hi = out[key]["ci"]
        assert lo <= out[key]["value"] <= hi


def test_summarize_counts_only_has_no_maj():
    out = summarize([ProblemOutcome.from_counts(5, 2), ProblemOutcome.from_counts(5, 0)], [1, 2])
    assert out["pass@2"]["value"] == pytest.approx(0.35)
    assert "maj@1" not in out


def test_summarize_rejects_k_above_n():
    with pytest.raises(ValueError, match="k=8"):
        summarize([ProblemOutcome.from_counts(4, 1)], [1, 8])
