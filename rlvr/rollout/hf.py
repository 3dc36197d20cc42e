"""Rollout backend on Hugging Face causal LMs: batched, left-padded, KV-cached sampling.

Which distribution the logprobs come from (what a trainer's importance ratio needs):

    logprobs[i] = log_softmax(logits_i / T)[token_i]          (T = params.temperature; T = 1 when greedy)

where logits_i are the model's raw next-token logits (fp32 copy). They are recorded *before* the temperature /
top-k / top-p filtering, i.e. they are log pi_theta at temperature T over the full vocabulary -- not the
truncated top-k/top-p distribution the token was drawn from (the two agree when top_k = 0 and top_p = 1, the RL
default), and not renormalised by the `min_new_tokens` EOS mask (applied after recording).

Sampling runs our own decode loop (`rlvr.rollout.decode`), not `model.generate`: on CPU, generate's multinomial
draw and logits-processor copies cost more than the model at RL batch sizes. It is pure: the model's own
`generation_config` defaults (repetition penalty, top-k 50, ...) play no part.
The engine can share the trainer's module: `update_weights(same_module)` is then a no-op; it puts the module in
eval mode while generating and restores its previous mode afterwards.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from rlvr.models.attention import use_sdpa_gqa
from rlvr.models.head_input import contiguous_head_input
from rlvr.models.packed_linear import can_pack, pack_linears, repack
from rlvr.rollout.base import Prompt, Rollout, SamplingParams, register_engine
from rlvr.rollout.decode import decode

__all__ = ["HFEngine"]


class _StopOnStrings:
    """Stops a row once the decoded tail of its completion contains a stop string; remembers the step.

    Decodes only the last `window` completion tokens of unfinished rows each step (enough tokens to spell the
    longest stop string even with byte-level tokens), so the cost is O(batch * window) per step.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, tuple(stops), prompt_len
        self.window = 4 * max(len(s) for s in stops) + 4
        self.hit_step: list[int] | None = None          # per row: completion index that completed a stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        batch, step = input_ids.shape[0], input_ids.shape[1] - self.prompt_len - 1
        if self.hit_step is None:
            self.hit_step = [-1] * batch
        rows = [i for i in range(batch) if self.hit_step[i] < 0]
        if rows:
            start = max(self.prompt_len, input_ids.shape[1] - self.window)
            tails = self.tokenizer.batch_decode(input_ids[rows, start:].tolist(), skip_special_tokens=True)
            for i, tail in zip(rows, tails):
                if any(s in tail for s in self.stops):
                    self.hit_step[i] = step
        done = [h >= 0 for h in self.hit_step]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@register_engine("hf")
class HFEngine:
    """`RolloutEngine` over any HF causal LM.

    model: a `PreTrainedModel` (shared with the trainer, not copied) or a path / hub id to load (onto CUDA
        when available, unless `device` says otherwise).
    dtype: e.g. "bfloat16": the weights to sample with. A path is loaded in it; a module of another dtype is
        copied once into it (the engine then owns that copy and `update_weights` copies the trainer's weights
        in) -- on CPU a bf16 copy avoids autocast's per-call weight casts and halves a decode step's weight
        reads (SmolLM2-135M: ~25% less sampling CPU time than fp32 weights under autocast).
    tokenizer: required with a module; loaded from the path otherwise.
    max_batch_sequences: most sequences (prompts x n) per `generate` call; larger requests are chunked.
    autocast_bf16: run generation under bf16 autocast (useful on CPUs with bf16 support).
    pack_weights: hold the linear layers' weights pre-packed for oneDNN (rlvr.models.packed_linear; same outputs),
        for bf16 weights the engine owns on a CPU with bf16 kernels; never for a module shared with the trainer.
        Off by default: faster linears at one thread, but no gain in a whole 2-thread GRPO step and a re-pack after
        every weight update (docs/performance.md).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, max_batch_sequences: int = 256,
                 autocast_bf16: bool = False, device: str | None = None, dtype: str | None = None,
                 pack_weights: bool = False):
        owned = isinstance(model, (str, Path))   # the engine's own weights (loaded here, or a copy below)
        if owned:
            model, tokenizer = _load(str(model), tokenizer, dtype)
            if device is None:
                from rlvr.distributed.context import context
                device = context().device
        if tokenizer is None:
            raise ValueError("HFEngine: pass the tokenizer together with a model object")
        elif dtype is not None and next(model.parameters()).dtype != getattr(torch, dtype):
            model = copy.deepcopy(model).to(getattr(torch, dtype)).eval().requires_grad_(False)
            owned = True
        if owned:
            contiguous_head_input(model)
        if device is not None:
            model = model.to(device)
        if owned:   # a no-grad copy on CPU: SDPA with grouped-query heads uncopied (rlvr.models.attention)
            use_sdpa_gqa(model)
        if pack_weights and owned and can_pack(model) and next(model.parameters()).dtype == torch.bfloat16:
            pack_linears(model)
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_sequences = max(1, int(max_batch_sequences))
        self.autocast_bf16 = autocast_bf16
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    # ----------------------------------------------------------------------------------------------- public
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Rollout]]:
        if self.model is None:
            raise RuntimeError("HFEngine.generate called after close()")
        encoded = [self._encode(p) for p in prompts]
        n_gen = 1 if params.greedy else params.n            # greedy samples are identical: decode once, copy
        per_chunk = max(1, self.max_batch_sequences // n_gen)
        out: list[list[Rollout]] = []
        with self._generation_mode(params.seed):
            for start in range(0, len(encoded), per_chunk):
                out.extend(self._generate_chunk(encoded[start:start + per_chunk], params, n_gen))
        if n_gen != params.n:
            out = [group * params.n for group in out]
        return out

    def update_weights(self, model_or_state_dict: Any) -> None:
        """No-op for the shared module; otherwise copy a module's (or a state dict's) tensors into ours."""
        if model_or_state_dict is self.model:
            return
        state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) \
            else model_or_state_dict
        self.model.load_state_dict(state, strict=True)
        repack(self.model)

    def close(self) -> None:
        self.model = None

    # ---------------------------------------------------------------------------------------------- private
    def _encode(self, prompt: Prompt) -> list[int]:
        if not isinstance(prompt, str):                  # token ids: used as they are
            if not prompt:
                raise ValueError("a token-id prompt must not be empty")
            return [int(t) for t in prompt]
        # Chat templates already write the BOS token; adding it again would double it.
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and prompt.startswith(bos))
        ids = self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {prompt[:40]!r} encodes to zero tokens")
        return list(ids)

    @contextlib.contextmanager
    def _generation_mode(self, seed: int | None) -> Iterator[None]:
        """Eval mode (no dropout) + optional seeded RNG that leaves the caller's RNG state untouched."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
        try:
            with rng:
                if seed is not None:
                    torch.manual_seed(seed)
                yield
        finally:
            self.model.train(was_training)

    def _generate_chunk(self, prompt_ids: list[list[int]], params: SamplingParams,
                        n_gen: int) -> list[list[Rollout]]:
        rows = [ids for ids in prompt_ids for _ in range(n_gen)]         # grouped: p0 x n, p1 x n, ...
        input_ids, attention_mask = self._left_pad(prompt_ids)            # [U, P] each: one row per prompt
        prompt_len = input_ids.shape[1]
        stopper = _StopOnStrings(self.tokenizer, params.stop, prompt_len) if params.stop else None
        autocast = torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16)
        with autocast:
            completions, logprobs = decode(                               # [B, L] each
                self.model, input_ids, attention_mask, max_new_tokens=params.max_new_tokens,
                temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                min_new_tokens=params.min_new_tokens, eos_ids=self.eos_ids, pad_id=self.pad_id, repeats=n_gen,
                stop_fn=(lambda seq: stopper(seq, None)) if stopper else None)
        hits = stopper.hit_step if stopper and stopper.hit_step else [-1] * len(rows)
        flat = [self._rollout(ids, comp, lp, hit, params)
                for ids, comp, lp, hit in zip(rows, completions.tolist(), logprobs.tolist(), hits)]
        return [flat[i:i + n_gen] for i in range(0, len(flat), n_gen)]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    def _rollout(self, prompt_ids: list[int], comp: list[int], logprobs: list[float], stop_hit: int,
                 params: SamplingParams) -> Rollout:
        """Cut one row at its first EOS (kept) or stop-string token (kept); everything after is padding."""
        eos_at = next((i for i, t in enumerate(comp) if t in self.eos_ids), -1)
        ends = [e for e in (eos_at, stop_hit) if e >= 0]
        end = min(ends) + 1 if ends else len(comp)
        finish = "stop" if ends else "length"
        comp, logprobs = comp[:end], logprobs[:end]
        text = self.tokenizer.decode(comp, skip_special_tokens=True)
        stop_str = None
        if stop_hit >= 0 and (eos_at < 0 or stop_hit < eos_at):
            text, stop_str = _cut_at_stop(text, params.stop, params.include_stop_str_in_output)
        return Rollout(prompt_ids=prompt_ids, completion_ids=comp, text=text, logprobs=logprobs,
                       finish_reason=finish, stop_str=stop_str)


def _cut_at_stop(text: str, stops: Sequence[str], include: bool) -> tuple[str, str | None]:
    """Cut `text` at the stop string whose first occurrence ends earliest (the one that stopped generation)."""
    found = [(text.find(s) + len(s), s) for s in stops if s in text]
    if not found:
        return text, None
    end, stop = min(found)
    return (text[:end] if include else text[:end - len(stop)]), stop


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_cfg = getattr(model, "generation_config", None)
    for value in (getattr(gen_cfg, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    return ids


def _load(path: str, tokenizer: Any, dtype: str | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
