"""The public surface of rlvr.algos: registries (miss lists names, duplicates raise) and a torch-only import."""
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.algos import (
    UnknownAlgorithmError,
    get_kl,
    get_policy_loss,
    list_kl,
    list_policy_losses,
    register_kl,
    register_policy_loss,
)
from rlvr.algos.registry import Registry

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("getter, names", [(get_kl, list_kl), (get_policy_loss, list_policy_losses)])
def test_miss_lists_valid_names(getter, names):
    with pytest.raises(UnknownAlgorithmError) as e:
        getter("nope")
    assert str(e.value).startswith("unknown ") and all(n in str(e.value) for n in names())


def test_duplicates_raise():
    with pytest.raises(ValueError, match="already registered"):
        register_kl("k3")(lambda a, b: a)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("ppo_clip")(lambda *a: a)


def test_fresh_registry_roundtrip():
    reg = Registry("widget")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg.names() == ["a"] and "a" in reg
    with pytest.raises(UnknownAlgorithmError, match="unknown widget 'b'; known: a"):
        reg.get("b")


def test_contract_imports_and_torch_only():
    code = (
        "import sys\n"
        "from rlvr.algos import bradley_terry_loss, dpo_loss, ipo_loss, simpo_loss, orpo_loss, gae_advantages\n"
        "heavy = [m for m in ('transformers', 'tasks', 'verifiers', 'rlvr.config') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
