"""Regression table for the `math` verifier, Math-Verify style: (gold, response, expected status) rows.

Every bug fix adds a row. All rows are verified in one `check_batch` call (a module fixture), so the table
stays fast as it grows.
"""
from __future__ import annotations

import pytest

from verifiers.math import check_batch

C, W, U, E = "correct", "wrong", "unparseable", "error"

TABLE: list[tuple[str, str, str, str]] = [
    # id, gold, response, expected
    # boxed / nested / last box
    ("boxed", "18", r"so the total is \boxed{18}.", C),
    ("boxed-nested", r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{\sqrt{3}}{2}}", C),
    ("boxed-nested-short", r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{\sqrt3}2}", C),
    ("boxed-last-wins", "5", r"First \boxed{3}; correcting myself: \boxed{5}", C),
    ("boxed-last-wins-wrong", "3", r"First \boxed{3}; correcting myself: \boxed{5}", W),
    ("fbox", "7", r"\fbox{7}", C),
    ("boxed-no-brace", "5", r"so $\boxed 5$", C),
    ("boxed-truncated", "5", r"\boxed{5} ... wait, \boxed{6", C),
    ("boxed-expression", "4", r"\boxed{2+2}", C),
    ("boxed-surd", r"2\sqrt{2}", r"\boxed{\sqrt{8}}", C),
    # fractions vs decimals, \dfrac
    ("frac-dfrac", r"\frac{14}{3}", r"\boxed{\dfrac{14}{3}}", C),
    ("frac-slash", r"\frac{14}{3}", r"\boxed{14/3}", C),
    ("frac-decimal-close", r"\frac{14}{3}", r"\boxed{4.6667}", C),
    ("frac-decimal-far", r"\frac{14}{3}", r"\boxed{4.6}", W),
    ("decimal-frac", "0.5", r"\boxed{\frac{1}{2}}", C),
    ("third-rounded-too-much", r"\frac{1}{3}", r"\boxed{0.333}", W),
    ("dfrac-gold", r"\dfrac{17}{50}", r"\boxed{0.34}", C),
    ("leading-dot", "0.5", r"\boxed{.5}", C),
    ("trailing-dot", "10", r"\boxed{10.}", C),
    # percent, units, degrees, currency
    ("percent", r"10\%", r"\boxed{10\%}", C),
    ("percent-bare", r"10\%", r"\boxed{10}", C),
    ("percent-wrong", r"10\%", r"\boxed{20\%}", W),
    ("units-gold", r"5 \text{ cm}", r"\boxed{5}", C),
    ("units-response", "12", r"\boxed{12 \text{ inches}}", C),
    ("units-degrees-text", r"\frac{270}7\text{ degrees}", r"\boxed{\frac{270}{7}}", C),
    ("degrees", r"90^\circ", r"\boxed{90}", C),
    ("dollars", r"\$32,\!348", r"\boxed{\$32,348}", C),
    # sets, intervals, tuples, matrices, equations
    ("set", r"\{1, 2, 3\}", r"\boxed{\{3, 2, 1\}}", C),
    ("set-missing", r"\{1, 2, 3\}", r"\boxed{\{1, 2\}}", W),
    ("list-as-set", "2, 3", r"\boxed{3, 2}", C),
    ("interval", r"x \in [2, 5)", r"\boxed{[2, 5)}", C),
    ("interval-closed-wrong", r"x \in [2, 5)", r"\boxed{[2, 5]}", W),
    ("interval-infinity", r"(-\infty, 3]", r"\boxed{(-\infty, 3]}", C),
    ("tuple", r"(3, \frac{\pi}{2})", r"\boxed{\left( 3, \frac{\pi}{2} \right)}", C),
    ("tuple-swapped", r"(3, \frac{\pi}{2})", r"\boxed{(\frac{\pi}{2}, 3)}", W),
    ("matrix", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", C),
    ("equation", "y = 2x + 1", r"\boxed{y=2x+1}", C),
    ("assignment", "3", r"\boxed{x=3}", C),
    ("polynomial-reordered", "x^3+3x-6", r"\boxed{3x + x^3 - 6}", C),
    ("symbols", "p - q", r"\boxed{-q + p}", C),
    # text answers, multiple choice
    ("text", r"\text{Evelyn}", r"\boxed{\text{Evelyn}}", C),
    ("text-answer-is", r"\text{Evelyn}", "The answer is Evelyn.", C),
    ("text-wrong", r"\text{east}", r"\boxed{\text{west}}", W),
    ("choice-letter", r"\text{(C)}", r"\boxed{C}", C),
    ("choice-parens", r"\text{(C)}", "The answer is (C).", C),
    ("choice-markdown", r"\text{(C)}", "**Answer:** C", C),
    ("choice-wrong", r"\text{(C)}", r"\boxed{D}", W),
    # negatives, scientific notation, big integers, constants
    ("negative", "-3", r"\boxed{-3}", C),
    ("negative-sign-lost", "-3", r"\boxed{3}", W),
    ("negative-answer-is", "-3", "The answer is $-3$.", C),
    ("sci-times", "300000", r"\boxed{3\times 10^{5}}", C),
    ("sci-e-notation", "0.0025", "The answer is 2.5e-3", C),
    ("sci-E-notation", "2500", r"\boxed{2.5E3}", C),
    ("big-int-off-by-one", "1000000", r"\boxed{1000001}", W),
    ("sqrt-decimal", r"\sqrt{2}", r"\boxed{1.41421}", C),
    ("pi-too-rough", r"\pi", r"\boxed{3.14}", W),
    ("aime-textbf-padded", "073", r"so $d = \boxed{\textbf{(073)}}.$", C),
    ("text-wrapped-number", "25", r"\boxed{\text{25}}", C),
    # GSM8K style: commas, ####
    ("gsm8k-hashes", "18", "She makes 9 * 2 = $18 every day.\n#### 18", C),
    ("gsm8k-comma", "1000", "#### 1,000", C),
    ("gsm8k-comma-gold", "1,000", r"\boxed{1000}", C),
    ("gsm8k-wrong", "18", "#### 17", W),
    ("last-number-comma", "1000", "The total is 1,000 dollars.", C),
    ("last-number-wrong", "1000", "I think 999 or so.", W),
    # <answer> tags, "the answer is"
    ("answer-tag", "42", "<think>6*7</think><answer>42</answer>", C),
    ("answer-tag-boxed", r"\frac{1}{2}", r"<answer>\boxed{\frac12}</answer>", C),
    ("answer-tag-wrong", "42", "<think>6*7=42</think><answer>41</answer>", W),
    ("answer-is-latex", "p - q", "Therefore the final answer is $p - q$.", C),
    ("minerva-format", r"\frac{1}{2}", r"Final Answer: The final answer is $\frac{1}{2}$. I hope it is correct.", C),
    ("answer-colon-newline", "42", "The answer is:\n\n42", C),
    ("percent-sign-decimal-gold", "0.25", "so it grew by 25%", C),
    ("percent-sign-integer-gold", "25", "so it grew by 25%", C),
    # no answer / broken gold
    ("no-answer", "5", "I don't know.", U),
    ("empty-response", "5", "", U),
    ("empty-box", "5", r"\boxed{}", U),
    ("gold-unparsable", "???", r"\boxed{5}", E),
]


@pytest.fixture(scope="module")
def verdicts():
    results = check_batch([(response, gold) for _, gold, response, _ in TABLE], timeout=10)
    return {row[0]: v for row, v in zip(TABLE, results)}


def test_table_is_big_enough_and_ids_unique():
    assert len(TABLE) >= 40
    assert len({row[0] for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("row_id, gold, response, expected", TABLE, ids=[row[0] for row in TABLE])
def test_row(verdicts, row_id, gold, response, expected):
    v = verdicts[row_id]
    assert v.status == expected, f"gold={gold!r} response={response!r} -> {v}"
    assert v.reward == (1.0 if expected == "correct" else 0.0)
