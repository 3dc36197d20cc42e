"""Answer extraction (`verifiers.extract`): pure string functions, no pool, no sympy."""
from __future__ import annotations

import time

import pytest

from verifiers.extract import EXTRACTORS, extract_answer, last_boxed


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),             # nested braces
    (r"first \boxed{3}, then \boxed{5}", "5"),                          # last box wins
    (r"\fbox{7}", "7"),
    (r"$\boxed 5$", "5"),                                               # brace-less form
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),                                 # escaped braces are not structure
    (r"\boxed{5} and then \boxed{6", "5"),                              # unclosed (truncated) box skipped
    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("name, text, expected", [
    ("answer_tag", "<think>hm</think><answer> 42 </answer>", " 42 "),
    ("answer_tag", r"<answer>x</answer> <answer>so \boxed{7}</answer>", "7"),   # last block, box inside wins
    ("answer_tag", "<answer>unclosed", None),
    ("gsm8k", "9 * 2 = 18\n#### 1,018", "1018"),
    ("gsm8k", "#### -3.5", "-3.5"),
    ("gsm8k", "#### nothing", None),
    ("answer_is", "So the final answer is 3.5.", "3.5"),
    ("answer_is", "The answer is $p - q$.\nDone", "p - q"),
    ("answer_is", "**Answer:** (C)", "(C)"),
    ("answer_is", "The answer is:\n\n42", "42"),
    ("answer_is", "Final Answer: The final answer is $5$. I hope it is correct.", "5"),   # last anchor
    ("last_number", "it costs 1,234 dollars, or -5 after tax", "-5"),
    ("last_number", "ratio 3/4", "3/4"),
    ("last_number", "tiny: 2.5e-3", "2.5e-3"),
    ("last_number", "up 25% this year", r"25\%"),
    ("last_number", "no digits", None),
])
def test_extractors(name, text, expected):
    assert EXTRACTORS[name](text) == expected


def test_order_first_hit_wins():
    text = r"<answer>4</answer> and \boxed{5}, the answer is 6. 7"
    assert extract_answer(text) == ("boxed", "5")
    assert extract_answer(text, ("answer_tag", "boxed")) == ("answer_tag", "4")
    assert extract_answer(text, ("answer_is",)) == ("answer_is", "6")
    assert extract_answer(text, ("last_number",)) == ("last_number", "7")
    assert extract_answer("no answer at all", ("boxed", "gsm8k")) is None
    assert extract_answer(r"\boxed{} 3") == ("last_number", "3")       # an empty box is no answer


@pytest.mark.parametrize("text", [
    r"\boxed{" + "{" * 500 + "1" + "}" * 500 + "}",
    r"\boxed{" * 5000 + "x",                                             # thousands of unclosed boxes
    r"\frac{1}{2} + " * 4000 + r"\boxed{1}",                             # ~50 KB of LaTeX
    "answer is " * 5000,
    "1," * 25000,
])
def test_extraction_is_linear_time(text):
    start = time.perf_counter()
    for name in EXTRACTORS:
        EXTRACTORS[name](text)
    assert time.perf_counter() - start < 1.0
