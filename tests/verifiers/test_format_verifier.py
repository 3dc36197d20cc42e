"""`format` / `format_partial`: strict tag layout and tag-count partial credit, hand-computed."""
from __future__ import annotations

import pytest

from verifiers.base import VerifyContext, get_verifier
from verifiers.format import FormatVerifier

CTX = VerifyContext()
GOOD = "<think>6*7 is 42</think>\n<answer>42</answer>"


@pytest.mark.parametrize("response, strict, credit", [
    (GOOD, True, 1.0),
    ("  " + GOOD + "\n", True, 1.0),                                  # surrounding whitespace is fine
    ("<think>x</think><answer>42</answer> trailing", False, 1.0),     # all tags once, text after: partial 1
    ("<think>x</think>", False, 0.5),                                 # 2 of 4 tags
    ("<answer>42</answer>", False, 0.5),
    ("<think>x</think><answer>42</answer><answer>43</answer>", False, 0.5),  # answer tags twice: no credit
    ("<answer>42</answer><think>x</think>", False, 1.0),              # wrong order
    ("<think></think><answer>42</answer>", False, 1.0),               # empty think block
    ("42", False, 0.0),
])
def test_strict_and_partial(response, strict, credit):
    v = FormatVerifier()(response, CTX)
    assert v.status == ("correct" if strict else "wrong")
    assert v.reward == float(strict)
    p = get_verifier("format_partial")(response, CTX)
    assert p.status == v.status
    assert p.reward == pytest.approx(credit)


def test_prompt_opens_think():
    v = FormatVerifier(prompt_opens_think=True)
    assert v("6*7 is 42</think><answer>42</answer>", CTX).status == "correct"
    assert v(GOOD, CTX).status == "wrong"                             # opened the block again
    p = FormatVerifier(prompt_opens_think=True, partial=True)
    assert p("6*7 is 42</think> 42", CTX).reward == pytest.approx(1 / 3)   # 1 of 3 expected tags


def test_custom_tag_names_and_validation():
    v = get_verifier("format", think_tag="reasoning", answer_tag="solution")
    assert v("<reasoning>r</reasoning><solution>s</solution>", CTX).status == "correct"
    assert v(GOOD, CTX).status == "wrong"
    with pytest.raises(ValueError, match="think_tag"):
        FormatVerifier(think_tag="<think>")


@pytest.mark.parametrize("response,status,partial", [
    ("<answer>46</answer>", "correct", 1.0),
    ("  <answer>46</answer>\n", "correct", 1.0),
    ("<answer>46", "wrong", 0.5),
    ("46", "wrong", 0.0),
    ("<answer>46</answer> extra", "wrong", 1.0),
    ("<answer></answer>", "wrong", 1.0),
])
def test_answer_only_format_without_think_block(response, status, partial):
    from verifiers.base import VerifyContext
    from verifiers.format import FormatVerifier
    strict = FormatVerifier(think_tag=None)(response, VerifyContext())
    assert strict.status == status and strict.reward == (1.0 if status == "correct" else 0.0)
    assert FormatVerifier(think_tag=None, partial=True)(response, VerifyContext()).reward == partial
