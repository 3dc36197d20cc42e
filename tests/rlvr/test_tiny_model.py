"""The embedded tiny model: built locally, loads through the ordinary HF Auto* path, char-level tokenizer."""
from __future__ import annotations

import json

import pytest
import torch

from rlvr.models.tiny import SPECIAL_TOKENS, TAG_TOKENS, TINY_ALPHABET, build_tiny_model, build_tiny_tokenizer, \
    default_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_loads_with_auto_classes(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert isinstance(model, LlamaForCausalLM)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.8e6 < n_params < 0.9e6                       # ~0.86M with the defaults
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == \
        (128, 4, 4, 384)
    assert cfg.vocab_size == len(tok) == len(SPECIAL_TOKENS) + len(set(TINY_ALPHABET)) + len(TAG_TOKENS) == 78
    assert tok.eos_token == "</s>" and tok.pad_token == "<pad>" and tok.bos_token == "<s>"
    assert tok.unk_token == "<unk>" and not getattr(tok, "chat_template", None)
    out = model(torch.tensor([tok("12+34=")["input_ids"]]))
    assert out.logits.shape == (1, 6, len(tok))


def test_char_level_roundtrip(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tok("12+34=")["input_ids"]
    assert len(ids) == 6 and tok.convert_ids_to_tokens(ids) == list("12+34=")
    for text in ["12+34=", "what is 3 * (4 - 1)?\n<answer>9</answer>", "a  b\n\nc", "x^2 = 1/2, y."]:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.decode(tok("ABC")["input_ids"]) == "abc"                     # lower-cased, not <unk>
    assert tok("é")["input_ids"] == [tok.unk_token_id]
    assert tok.decode([tok.eos_token_id, tok.convert_tokens_to_ids("7")], skip_special_tokens=True) == "7"


def test_format_tags_are_single_tokens(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tok("<think>1+2</think><answer>3</answer>")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<think>", "1", "+", "2", "</think>", "<answer>", "3", "</answer>"]
    assert len(set(tok.convert_tokens_to_ids(list(TAG_TOKENS)))) == 4 and tok.unk_token_id not in ids
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == "<think>1+2</think><answer>3</answer>"
    assert tok("<ANSWER>")["input_ids"] == tok("<answer>")["input_ids"]            # matched after lower-casing
    assert len(tok("<answe")["input_ids"]) == 6                                     # a partial tag is characters


def test_build_is_deterministic(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3, hidden=32, layers=1, heads=2, intermediate=64)
    b = build_tiny_model(tmp_path / "b", seed=3, hidden=32, layers=1, heads=2, intermediate=64)
    c = build_tiny_model(tmp_path / "c", seed=4, hidden=32, layers=1, heads=2, intermediate=64)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert json.loads((a / "config.json").read_text())["hidden_size"] == 32


def test_build_does_not_touch_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", hidden=16, layers=1, heads=2, intermediate=32)
    assert torch.equal(torch.rand(3), expected)


def test_bad_shape_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_model(tmp_path / "x", hidden=30, heads=4)


def test_default_model_dir_builds_once_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    path = default_model_dir()
    assert path == tmp_path / "tiny-llama" and (path / "config.json").is_file()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert default_model_dir() == path                                   # second call: no rebuild
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs cleaned up


def test_default_model_dir_replaces_stale_version(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    stale = tmp_path / "tiny-llama"
    stale.mkdir()
    (stale / "rlvr_tiny.json").write_text(json.dumps({"version": -1}))
    path = default_model_dir()
    assert (path / "model.safetensors").is_file()
    assert json.loads((path / "rlvr_tiny.json").read_text())["version"] != -1


def test_tokenizer_builder_alone():
    tok = build_tiny_tokenizer()
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert tok("1\n2")["input_ids"] == [tok.convert_tokens_to_ids(c) for c in "1\n2"]
