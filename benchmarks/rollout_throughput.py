"""Rollout throughput: the HF `generate` engine vs the vLLM engine, same prompts, same sampling, one process.

Prompts: GSM8K test questions rendered with the model's chat template (what an RL step samples from). Both
engines get the same `SamplingParams` (n samples per prompt, temperature, seed); by default every completion is
forced to exactly `--max-new-tokens` tokens (`min_new_tokens = max_new_tokens`, EOS masked) so both engines do
the same amount of work — `--allow-eos` lets completions stop early instead (then token counts differ and only
tokens/s is comparable). Each engine is warmed up on one short request first (start-up, first-call set-up
excluded); then one timed `generate` over all prompts. Precision (`--precision`): bf16 by default, as recipes
run rollouts (`rollout.bf16: true`): HF bf16 autocast over fp32 weights, vLLM bf16 weights; fp32: both fp32.
`--hf-dtype bfloat16` gives the HF engine a bf16 sampling copy instead (what `rollout.dtype: bfloat16` does).

On a shared machine the absolute numbers move with the load; the ratio is measured back to back in one run.
The last line printed is one JSON object: {"hf_tok_s": ..., "vllm_tok_s": ..., "ratio": ...}

Usage: python benchmarks/rollout_throughput.py [--model smollm2|tiny|DIR] [--prompts 16] [--n 4]
       [--max-new-tokens 64] [--temperature 1.0] [--precision bf16|fp32] [--hf-dtype bfloat16] [--allow-eos]
       [--seed 0] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def model_dir(name: str) -> str:
    if name == "smollm2":
        from rlvr.models.gguf import smollm2_dir
        return str(smollm2_dir())
    from rlvr.trainers.common import resolve_model_path
    return resolve_model_path(name)


def gsm8k_prompts(tokenizer, k: int) -> list[str]:
    from tasks.registry import get_task

    task = get_task("gsm8k_int")
    return [task.render(ex, tokenizer) for ex in task.load("test", k)]


def timed(engine, prompts, params) -> tuple[float, int]:
    from rlvr.rollout import SamplingParams

    engine.generate(prompts[:1], SamplingParams(max_new_tokens=4, seed=0))          # warm-up
    t0 = time.perf_counter()
    groups = engine.generate(prompts, params)
    seconds = time.perf_counter() - t0
    return seconds, sum(r.num_tokens for g in groups for r in g)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 (converted GGUF), tiny, or an HF model dir")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                    help="bf16: HF bf16 autocast + vLLM bf16 weights (default); fp32: both fp32")
    ap.add_argument("--hf-dtype", default=None, help="HF engine's sampling copy dtype (rollout.dtype), e.g. bfloat16")
    ap.add_argument("--allow-eos", action="store_true", help="let completions end early")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch/OpenMP threads for both engines (default: torch's); 1 is fastest on a busy box")
    args = ap.parse_args(argv)

    import torch

    from rlvr.rollout import SamplingParams, get_engine
    from rlvr.trainers.common import load_model_and_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_dir(args.model)
    model, tok = load_model_and_tokenizer(path, dtype="float32")
    prompts = gsm8k_prompts(tok, args.prompts)
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                            min_new_tokens=0 if args.allow_eos else args.max_new_tokens, seed=args.seed)
    bf16 = args.precision == "bf16"
    hf = get_engine("hf", model=model, tokenizer=tok, autocast_bf16=bf16, dtype=args.hf_dtype)
    hf_s, hf_tokens = timed(hf, prompts, params)
    hf.close()
    t0 = time.perf_counter()
    vllm = get_engine("vllm", model=path, tokenizer=tok, dtype="bfloat16" if bf16 else "float32")
    start_s = time.perf_counter() - t0
    vllm_s, vllm_tokens = timed(vllm, prompts, params)
    vllm.close()

    hf_tok_s, vllm_tok_s = hf_tokens / hf_s, vllm_tokens / vllm_s
    prompt_len = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) / len(prompts)
    print(f"model {args.model} ({path}); {len(prompts)} prompts (mean {prompt_len:.0f} tokens) x n={args.n}, "
          f"max_new_tokens={args.max_new_tokens}, T={args.temperature:g}, "
          f"{args.precision}{f', HF {args.hf_dtype} copy' if args.hf_dtype else ''}, "
          f"{'EOS allowed' if args.allow_eos else 'fixed length'}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'engine':8}{'tokens':>9}{'seconds':>10}{'tok/s':>10}")
    print(f"{'hf':8}{hf_tokens:9d}{hf_s:10.2f}{hf_tok_s:10.1f}")
    print(f"{'vllm':8}{vllm_tokens:9d}{vllm_s:10.2f}{vllm_tok_s:10.1f}   (engine start {start_s:.1f} s, not timed)")
    result = {"hf_tok_s": round(hf_tok_s, 1), "vllm_tok_s": round(vllm_tok_s, 1),
              "ratio": round(vllm_tok_s / hf_tok_s, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
