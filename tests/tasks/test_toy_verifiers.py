"""The `countdown` and `integer` verifiers: tables of (response, expected status), never an exception."""
from __future__ import annotations

import pickle

import pytest

from verifiers.base import VerifyContext, get_verifier
from verifiers.countdown import evaluate, extract_expression

CD = VerifyContext(gold="24", example={"numbers": [3, 5, 3, 8], "target": 24})

COUNTDOWN_ROWS = [
    # response, expected status, reason fragment
    ("<answer>(3 + 5) * 3</answer>", "correct", None),
    ("I think so.\n(8 - 5) * 8", "wrong", "not available"),                # 8 used twice, given once
    ("work...\n<answer>8 * 3</answer> done", "correct", None),
    ("<answer>8 * 3 = 24</answer>", "correct", None),                        # trailing "= 24" dropped
    ("<answer>8 × 3</answer>", "correct", None),                             # unicode times
    ("<answer>3 * 3 * 3 - 3</answer>", "wrong", "not available"),            # 3 used three times, given twice
    ("<answer>4 * 6</answer>", "wrong", "not available"),                    # numbers not given
    ("<answer>3 + 5 + 8</answer>", "wrong", "!= target"),                    # valid, wrong value
    ("<answer>8 / (3 - 3)</answer>", "wrong", "division by zero"),
    ("<answer>(8 / 3) * (5 + 3 - 5)</answer>", "wrong", "not available"),    # 5 reused
    ("<answer>8 / (3 / 9)</answer>", "wrong", "not available"),
    ("<answer>3 ** 3</answer>", "unparseable", "Pow"),
    ("<answer>__import__('os').system('true')</answer>", "unparseable", "Call"),
    ("<answer>x + 3</answer>", "unparseable", "Name"),
    ("<answer>(3).real</answer>", "unparseable", "Attribute"),
    ("<answer>8 % 5</answer>", "unparseable", "Mod"),
    ("<answer>24.0</answer>", "unparseable", "Constant"),                    # floats are not given numbers
    ("<answer>'24'</answer>", "unparseable", "Constant"),
    ("<answer>[8, 3]</answer>", "unparseable", "List"),
    ("<answer>(3 + </answer>", "unparseable", "not an expression"),
    ("<answer>" + "(" * 100 + "3" + ")" * 100 + "</answer>", "wrong", "!= target"),
    ("<answer>" + "3+" * 200 + "3</answer>", "unparseable", "longer than"),
    ("", "unparseable", "empty"),
]


@pytest.mark.parametrize("response, status, reason", COUNTDOWN_ROWS)
def test_countdown_table(response, status, reason):
    v = get_verifier("countdown")(response, CD)
    assert v.status == status, v
    assert v.reward == (1.0 if status == "correct" else 0.0)
    if reason:
        assert reason in v.info["reason"], v.info


@pytest.mark.parametrize("expr, exact_status, loose_status, reason", [
    ("2 * 4 + 4 * 3", "correct", "correct", None),
    ("(2 + 3) * 4", "wrong", "correct", "numbers not used: [4]"),
    ("(2 + 3) * 4 * 4 / 4", "wrong", "wrong", "numbers not available: [4]"),   # 4 three times
    ("2 * 3 * 4 - 4 + 0", "wrong", "wrong", "numbers not available: [0]"),
])
def test_countdown_exact_requires_every_number(expr, exact_status, loose_status, reason):
    ctx = VerifyContext(gold="20", example={"numbers": [2, 3, 4, 4], "target": 20})
    exact = get_verifier("countdown", exact=True)(f"<answer>{expr}</answer>", ctx)
    assert exact.status == exact_status and exact.info.get("reason") == reason
    assert get_verifier("countdown")(f"<answer>{expr}</answer>", ctx).status == loose_status


def test_countdown_exact_fractions_and_missing_record_fields():
    ctx = VerifyContext(gold="1", example={"numbers": [1, 49, 49], "target": 1})
    assert 1 / 49 * 49 != 1                                          # in floats
    assert get_verifier("countdown")("<answer>1 / 49 * 49</answer>", ctx).status == "correct"
    assert get_verifier("countdown")("<answer>7</answer>", VerifyContext(gold="7")).status == "error"
    assert get_verifier("countdown")("7", VerifyContext(gold="7", example={"numbers": [7]})).status == "correct"


def test_countdown_evaluate_and_extract():
    value, used = evaluate("-(3 - 8) * 2")
    assert (value, used) == (10, [3, 8, 2])
    assert extract_expression("blah\n\n  $(1 + 2) * 3$  \n") == "(1 + 2) * 3"
    assert extract_expression("<answer>a</answer> <answer> 1+2 </answer>") == "1+2"


INTEGER_ROWS = [
    # response, gold, options, status, answer
    ("<answer>579</answer>", "579", {}, "correct", "579"),
    ("so 123 + 456 = 579", "579", {}, "correct", "579"),
    ("579 is it, not 580", "579", {"pick": "first"}, "correct", "579"),
    ("579 is it, not 580", "579", {}, "wrong", "580"),
    ("<answer>1,234</answer> and 5 more", "1234", {}, "correct", "1234"),
    ("The answer is -12.", "-12", {}, "correct", "-12"),
    ("42.0", "42", {}, "correct", "42"),
    ("about 2.5", "2", {}, "unparseable", None),
    ("no digits here", "1", {}, "unparseable", None),
    ("answer 7", "7", {"require_tags": True}, "unparseable", None),
    ("<answer>975</answer>", "579", {"reverse": True}, "correct", "579"),
    ("<answer>005</answer>", "500", {"reverse": True}, "correct", "500"),
    ("<answer>5</answer>", "500", {"reverse": True}, "wrong", "5"),
    ("<answer>579</answer>", "579", {"reverse": True}, "wrong", "975"),
    ("0481 and more", "1840", {"reverse": True, "pick": "first"}, "correct", "1840"),
]


@pytest.mark.parametrize("response, gold, options, status, answer", INTEGER_ROWS)
def test_integer_table(response, gold, options, status, answer):
    v = get_verifier("integer", **options)(response, VerifyContext(gold=gold))
    assert (v.status, v.info["answer"]) == (status, answer)
    assert v.reward == (1.0 if status == "correct" else 0.0)


def test_integer_bad_gold_and_bad_option():
    assert get_verifier("integer")("3", VerifyContext(gold="x")).status == "error"
    with pytest.raises(ValueError, match="pick must be"):
        get_verifier("integer", pick="middle")


def test_verifiers_pickle():
    for v in (get_verifier("integer", reverse=True), get_verifier("countdown", exact=True)):
        clone = pickle.loads(pickle.dumps(v))
        assert vars(clone) == vars(v)
