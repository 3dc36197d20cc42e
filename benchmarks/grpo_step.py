"""Seconds per GRPO step on SmolLM2-135M-Instruct (HF backend by default).

Fixed work per step: 4 prompts x 8 completions, exactly 64 new tokens each (min_new_tokens = max_new_tokens),
prompts of ~50 tokens (GSM8K questions, plain layout), beta = 0.04 (so a reference forward runs too).
The first step is a warm-up; the median of the timed steps is reported with its generate / verify / train split.

    python benchmarks/grpo_step.py [--model DIR] [--steps N] [--backend hf|vllm] [--no-bf16]

Last line: {"sec_per_step": ..., "generate_s": ..., "verify_s": ..., "train_s": ...}
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time


def pick_prompts(tokenizer, n: int, target: int = 50):
    """The n GSM8K test questions whose token length is closest to `target`."""
    from tasks.registry import get_task

    exs = get_task("gsm8k").load("test")
    return sorted(exs, key=lambda e: (abs(len(tokenizer(e.question)["input_ids"]) - target), e.id))[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="HF model dir (default: SmolLM2-135M converted from GGUF)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--backend", default="hf")
    ap.add_argument("--no-bf16", action="store_true", help="fp32 everywhere (the slow baseline)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch

    from rlvr.rollout import get_engine
    from rlvr.trainers.common import build_optimizer, load_model_and_tokenizer
    from rlvr.trainers.grpo import GRPOConfig, PromptStream, collect_batch, policy_update
    from tasks.base import PromptTemplate
    from tasks.registry import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from rlvr.models.gguf import smollm2_dir
        args.model = str(smollm2_dir())
    bf16 = not args.no_bf16
    model, tok = load_model_and_tokenizer(args.model)
    task = get_task("gsm8k")
    task = dataclasses.replace(task, template=PromptTemplate(plain="{user}", chat=False), _cache={})
    examples = pick_prompts(tok, 4)
    cfg = GRPOConfig(prompts_per_step=4, group_size=8, max_new_tokens=64, min_new_tokens=64, beta=0.04,
                     dynamic_sampling=False, micro_batch=args.micro_batch, bf16=bf16, lr=1e-6)
    engine = get_engine(args.backend, model=model, tokenizer=tok, autocast_bf16=bf16)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = build_optimizer(model, cfg.lr)
    rows = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        model.eval()
        batch = collect_batch(engine, task, examples, PromptStream(len(examples), seed=step), cfg, tok, seed=step)
        t1 = time.perf_counter()
        model.train()
        policy_update(model, ref, opt, batch, cfg)
        engine.update_weights(model)
        t2 = time.perf_counter()
        row = {"step": step, "sec_per_step": t2 - t0, "generate_s": batch.metrics["time/generate_s"],
               "verify_s": batch.metrics["time/verify_s"], "train_s": t2 - t1,
               "new_tokens": int(batch.packed.completion_mask.sum())}
        rows.append(row)
        print(f"step {step}{' (warm-up)' if step == 0 else ''}: " +
              "  ".join(f"{k}={v:.2f}" for k, v in row.items() if k.endswith("_s") or k == "sec_per_step"))
    timed = rows[1:] or rows
    med = {k: statistics.median(r[k] for r in timed) for k in ("sec_per_step", "generate_s", "verify_s", "train_s")}
    print(f"\nGRPO step, {args.model.rstrip('/').split('/')[-1]}, 4x8 completions x 64 tokens, beta=0.04, "
          f"backend={args.backend}, bf16={bf16}, threads={torch.get_num_threads()}")
    print(f"{'part':<14}{'median s':>10}{'share':>8}")
    for k in ("generate_s", "verify_s", "train_s", "sec_per_step"):
        print(f"{k:<14}{med[k]:>10.2f}{med[k] / med['sec_per_step']:>8.0%}")
    engine.close()
    print(json.dumps({k: round(v, 3) for k, v in med.items()}))


if __name__ == "__main__":
    main()
