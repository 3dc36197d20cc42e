"""The adversarial suite (sandbox/adversarial.py): every case, in every configuration this machine supports,
must be contained — its own host-side check passes, no process outlives it, and the sandbox keeps working."""
from __future__ import annotations

import pytest

from sandbox.adversarial import CASES, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_is_contained(config_backend, case):
    outcome = run_case(case, config_backend)
    if outcome.contained is None:
        pytest.skip(outcome.detail)
    assert outcome.contained, f"{case.name} ({case.threat}): {outcome.detail}"
