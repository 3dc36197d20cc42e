"""`rlvr check-sync [--model DIR]`: does a weight sync make vLLM compute the trainer's log-probs?

Loads the model twice — as the trainer's HF module (fp32) and in a vLLM engine (fp32) — then nudges the
module's weights with seeded noise (so vLLM's copy from disk is stale), measures the log-prob gap before the
sync, syncs (`update_weights`, timed), and measures it again with `logprob_parity`: vLLM prompt logprobs vs
the trainer's `completion_logprobs` on the same sampled tokens. Before the sync the gap must be large (else the
check could not catch a broken sync); after it, mean |Δ| must be <= --tol. Exit status 1 when either fails.

The last line printed is one JSON object: {"mean_abs_diff": ..., "max_abs_diff": ...}
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rlvr.errors import RLVRError

PROMPTS = ("12+34=", "What is 7 times 8?", "Write a short poem about the sea.", "The capital of France is",
           "def fib(n):", "Q: If x + 3 = 10, what is x?\nA:", "Once upon a time", "List three prime numbers:")


def register(subparsers) -> None:
    p = subparsers.add_parser("check-sync", help="sync trainer weights into vLLM and compare log-probs")
    p.add_argument("--model", default="tiny", help="'tiny' (the embedded model, default) or an HF model dir")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"prompts sampled (1..{len(PROMPTS)})")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens sampled per prompt")
    p.add_argument("--perturb", type=float, default=0.05,
                   help="relative noise added to the trainer's weights before the sync (0: none)")
    p.add_argument("--tol", type=float, default=1e-3, help="largest acceptable mean |Δ log-prob| after the sync")
    p.add_argument("--seed", type=int, default=0, help="noise and sampling seed")
    p.set_defaults(func=run)


def check_sync(model: str = "tiny", *, prompts: int = len(PROMPTS), max_new_tokens: int = 32,
               perturb: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Returns {"before": parity, "after": parity, "sync_s": seconds, "init_s": seconds} (see module doc)."""
    import torch

    from rlvr.rollout.vllm import VLLMEngine, import_vllm, logprob_parity
    from rlvr.trainers.common import load_model_and_tokenizer, resolve_model_path

    import_vllm()                                             # fail before loading anything when it is missing
    if not 1 <= prompts <= len(PROMPTS):
        raise RLVRError(f"--prompts must be in 1..{len(PROMPTS)}, got {prompts}")
    if max_new_tokens < 1:
        raise RLVRError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    path = resolve_model_path(model)
    module, tok = load_model_and_tokenizer(path, dtype="float32")
    t0 = time.perf_counter()
    engine = VLLMEngine(path, tok, dtype="float32")           # from the files: the module is not synced yet
    init_s = time.perf_counter() - t0
    try:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * perturb * p.abs().mean())
        kwargs = dict(max_new_tokens=max_new_tokens, seed=seed)
        before = logprob_parity(engine, module, PROMPTS[:prompts], **kwargs)
        engine.update_weights(module)
        after = logprob_parity(engine, module, PROMPTS[:prompts], **kwargs)
    finally:
        engine.close()
    return {"before": before, "after": after, "sync_s": engine.last_sync_s, "init_s": init_s}


def run(args: argparse.Namespace) -> int:
    res = check_sync(args.model, prompts=args.prompts, max_new_tokens=args.max_new_tokens, perturb=args.perturb,
                     seed=args.seed)
    before, after = res["before"], res["after"]
    print(f"model {args.model}: vLLM start {res['init_s']:.1f} s, weight sync {res['sync_s']:.3f} s, "
          f"{after['tokens']} completion tokens compared")
    print(f"{'':26}{'mean |Δ|':>12}{'max |Δ|':>12}")
    for name, row in (("before sync (perturbed)", before), ("after sync", after)):
        print(f"{name:26}{row['mean_abs_diff']:12.3g}{row['max_abs_diff']:12.3g}")
    print(f"{'sampler logprobs':26}{after['sampler_mean_abs_diff']:12.3g}{after['sampler_max_abs_diff']:12.3g}")
    ok = after["mean_abs_diff"] <= args.tol
    caught = args.perturb == 0 or before["mean_abs_diff"] > 10 * args.tol
    if not ok:
        print(f"FAIL: mean |Δ| after sync {after['mean_abs_diff']:.3g} > --tol {args.tol:g}")
    if not caught:
        print(f"FAIL: the perturbation did not show before the sync (mean |Δ| {before['mean_abs_diff']:.3g}); "
              f"raise --perturb")
    print(json.dumps({"mean_abs_diff": after["mean_abs_diff"], "max_abs_diff": after["max_abs_diff"]}))
    return 0 if ok and caught else 1
