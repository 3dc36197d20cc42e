"""The embedded default model: a tiny randomly initialised Llama with a character-level tokenizer.

Built locally (no downloads) and saved in Hugging Face format, so every code path that loads it
(`AutoModelForCausalLM.from_pretrained`, `AutoTokenizer.from_pretrained`) is the one that loads real models.
It is what smoke tests, examples and `--model tiny` run on: small enough to train in seconds on a CPU.

Tokenizer: one token per character (digits, arithmetic operators, space, lowercase letters, `<`, `>`, newline,
some punctuation), plus one token per R1 format tag (`<think>`, `</think>`, `<answer>`, `</answer>`), the way a
real BPE vocabulary gives frequent strings their own tokens; input is lower-cased first; anything else is `<unk>`.
Special tokens `<pad>`=0, `<s>`=1, `</s>`=2 (EOS), `<unk>`=3. No BOS is added automatically and there is no chat
template, so a task's plain prompt layout is used and `tokenizer("12+34=")` is exactly six tokens. Decoding
concatenates the tokens' strings.

Why the tag tokens: spelled out character by character, `<answer>46</answer>` is 19 tokens of which 2 carry the
answer; as tags it is 4. Every decode step and every trained position of the tiny demos costs the same per-op
overhead, so the demos run ~2x faster, and the policy gradient is no longer diluted over 17 near-deterministic
tag characters.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["TINY_ALPHABET", "SPECIAL_TOKENS", "TAG_TOKENS", "build_tiny_tokenizer", "build_tiny_model",
           "default_model_dir", "cache_root"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
TINY_ALPHABET = ("0123456789" "+-*/=() " "abcdefghijklmnopqrstuvwxyz" "<>\n"
                 ".,:;?!'\"%^_#$\\{}[]&|~@`")
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
_VERSION = 2                      # bump when the default architecture or tokenizer changes: rebuilds caches
_MARKER = "rlvr_tiny.json"


def build_tiny_tokenizer(max_length: int = 256):
    """Character-level `PreTrainedTokenizerFast` built with the `tokenizers` library, plus one token per R1 format
    tag (vocab size 78)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in TINY_ALPHABET:
        vocab.setdefault(ch, len(vocab))
    for tag in TAG_TOKENS:
        vocab[tag] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # Every character (newline included, hence [\s\S]) is its own pre-token; Fuse joins without spaces.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    # Added (not special) tokens are matched on the normalised text before the per-character split, and they
    # survive `skip_special_tokens`, so verifiers see the tags in decoded completions.
    tok.add_tokens([AddedToken(tag, normalized=True) for tag in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        clean_up_tokenization_spaces=False, model_max_length=max_length)


def build_tiny_model(out_dir: str | Path, *, hidden: int = 128, layers: int = 4, heads: int = 4,
                     intermediate: int = 384, seed: int = 0, max_positions: int = 256) -> Path:
    """Create a random-init `LlamaForCausalLM` + its tokenizer and `save_pretrained` both into `out_dir`.

    Defaults give ~0.86M parameters (tied input/output embeddings). Deterministic for a given `seed`.
    Returns `out_dir` as a Path.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if hidden % heads:
        raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(max_positions)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-6, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng():            # deterministic init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    spec = dict(version=_VERSION, hidden=hidden, layers=layers, heads=heads, intermediate=intermediate,
                seed=seed, max_positions=max_positions)
    (out / _MARKER).write_text(json.dumps(spec, indent=1) + "\n")
    return out


def cache_root() -> Path:
    """`$RLVR_CACHE` if set, else `~/.cache/rlvr`."""
    return Path(os.environ.get("RLVR_CACHE") or "~/.cache/rlvr").expanduser()


def default_model_dir() -> Path:
    """Path of the default tiny model, `<cache_root()>/tiny-llama`, built on first use.

    The build goes into a temporary sibling directory that is renamed into place, so concurrent callers never
    see a half-written model: the first rename wins and the others discard their copy. A cache from an older
    `_VERSION` is replaced.
    """
    target = cache_root() / "tiny-llama"
    if _is_current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=target.parent))
    try:
        build_tiny_model(tmp)
        if target.exists() and not _is_current(target):     # stale version: move it aside, then swap in
            stale = Path(tempfile.mkdtemp(prefix=".tiny-llama-old-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_current(target):   # lost the race to a concurrent builder that left something odd
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_current(path: Path) -> bool:
    try:
        return json.loads((path / _MARKER).read_text()).get("version") == _VERSION
    except (OSError, ValueError):
        return False
