"""The `math` verifier: public API (check / check_batch / equivalent), statuses, options, pathological inputs."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from verifiers import check as package_check
from verifiers.base import VerifyContext, get_verifier
from verifiers.math import MathVerifier, check, check_batch, equivalent, equivalent_batch

REPO = Path(__file__).resolve().parents[2]


def test_check_correct_and_info():
    v = check(r"We get $x = \frac{14}{3}$, so \boxed{\dfrac{14}{3}}.", r"\frac{14}{3}")
    assert (v.status, v.reward) == ("correct", 1.0)
    assert v.info["answer"] == "14/3" and v.info["extractor"] == "boxed" and v.info["reason"]
    assert package_check is check


def test_answer_strings_cluster_equal_forms():
    forms = [r"\boxed{\frac{1}{2}}", r"\boxed{\dfrac12}", r"\boxed{1/2}", "The answer is 1/2."]
    answers = {v.info["answer"] for v in check_batch([(r, "0.5") for r in forms])}
    assert answers == {"1/2"}
    hash(next(iter(answers)))


@pytest.mark.parametrize("response, gold, status, reason", [
    ("I have no idea.", "5", "unparseable", "no answer found"),
    ("", "5", "unparseable", "no answer found"),
    (r"\boxed{5}", "", "error", "no gold answer"),
    (r"\boxed{5}", "???", "error", "gold did not parse"),
    (r"\boxed{\text{west}}", r"\text{east}", "wrong", "not equal"),
])
def test_statuses(response, gold, status, reason):
    v = check(response, gold)
    assert v.status == status and v.reward == 0.0
    assert reason in v.info["reason"]


def test_direct_call_and_registry_options():
    verifier = get_verifier("math", order=["last_number"])
    assert isinstance(verifier, MathVerifier) and verifier.order == ("last_number",)
    ctx = VerifyContext(gold="7")
    assert verifier(r"\boxed{7} but then 8", ctx).status == "wrong"      # boxed extractor switched off
    assert MathVerifier()(r"\boxed{7} but then 8", ctx).status == "correct"
    with pytest.raises(ValueError, match="known"):
        get_verifier("math", order=["nope"])


def test_rel_tol_applies_to_decimals_only():
    assert check(r"\boxed{4.6667}", r"\frac{14}{3}").status == "correct"     # |4.6667 - 14/3| / (14/3) = 7e-6
    assert check(r"\boxed{4.67}", r"\frac{14}{3}").status == "wrong"         # 1e-3
    assert check(r"\boxed{1000001}", "1000000").status == "wrong"            # integers: exact
    strict = MathVerifier(rel_tol=0.0)
    assert strict(r"\boxed{4.6667}", VerifyContext(gold=r"\frac{14}{3}")).status == "wrong"


def test_equivalent():
    assert equivalent("0.5", r"\frac{1}{2}")
    assert equivalent(r"\{1,2\}", r"\{2,1\}")
    assert equivalent(r"\text{Evelyn}", r"\text{evelyn}")
    assert not equivalent("1", "2")
    assert equivalent_batch([("3", "3.0"), ("x+1", "1+x"), ("2", "-2")]) == [True, True, False]


def test_import_is_cheap():
    code = ("import sys, verifiers; verifiers.list_verifiers(); from verifiers import check; "
            "heavy = [m for m in ('sympy', 'math_verify', 'pebble', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# Pathological inputs: each must come back within its deadline (as `timeout` or any fast verdict).
# These are bound checks, not speed targets: the slack covers a loaded 2-core machine.
_TIMEOUT, _SLACK = 2.0, 8.0
_PATHOLOGICAL = {
    "power-tower": ("The answer is 9^9^9^9", "1"),
    "python-power": ("The answer is 10**10**10", "1"),
    "boxed-tower": (r"\boxed{9^{9^{9^{9}}}}", "1"),
    "gold-tower": (r"\boxed{1}", r"9^{9^{9^{9}}}"),
    "50KB-latex": (r"\boxed{" + r"\frac{1}{2}+" * 4500 + "1}", "2"),
    "50KB-prose": (r"Let $x^2 + \sqrt{y}$ be given. " * 1600 + r"\boxed{3}", "3"),
    "500-braces": (r"\boxed{" + "{" * 500 + "1" + "}" * 500 + "}", "1"),
    "500-parens": (r"\boxed{" + "(" * 500 + "1" + ")" * 500 + "}", "1"),
    "500-sqrt": (r"\boxed{" + r"\sqrt{" * 500 + "2" + "}" * 500 + "}", "2"),
    "unclosed-braces": ("{" * 50000, "1"),
}


@pytest.mark.parametrize("response, gold", list(_PATHOLOGICAL.values()), ids=list(_PATHOLOGICAL))
def test_pathological_inputs_return_in_time(response, gold):
    start = time.monotonic()
    v = check(response, gold, timeout=_TIMEOUT)
    elapsed = time.monotonic() - start
    assert elapsed < _TIMEOUT + _SLACK, f"{elapsed:.1f}s"
    assert v.status in ("timeout", "correct", "wrong", "unparseable"), v
