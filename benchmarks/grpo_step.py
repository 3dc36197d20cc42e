"""Seconds per GRPO step on SmolLM2-135M-Instruct (HF backend by default; `--backend hf,vllm` runs both).

Fixed work per step: 4 prompts x 8 completions, exactly 64 new tokens each (min_new_tokens = max_new_tokens),
prompts of ~50 tokens (GSM8K questions, plain layout), beta = 0.04 (so a reference forward runs too).
The first step is a warm-up; the median of the timed steps is reported with its generate / verify / train split
and the train split's parts (reference forward, policy forward+backward, optimizer, weight sync).

    python benchmarks/grpo_step.py [--model DIR] [--steps N] [--backend hf|vllm|hf,vllm] [--baseline] [--compare]
                                   [--compare-pack] [--compare-share] [--compare-bf16-params] [--no-share-prompts]
                                   [--fp32-params] [--profile] [--no-bf16] [--micro-batch N] [--threads N]
                                   [--attn sdpa|eager]

The optimised variant trains with bf16 parameters and fp32 master weights (GRPO `bf16_params: true`, off by
default in recipes); `--fp32-params` runs the policy passes on the fp32 weights under bf16 autocast instead.

`--baseline` restores the settings this benchmark started from (SDPA attention, full float32 log-softmax over
[B, T, V], micro-batches of 8, `model.generate` on the fp32 trainer module under autocast, every row running its
own prompt); `--compare` runs
baseline and optimised steps alternately in one process (same box load for both) and prints both tables.
Several backends (`--backend hf,vllm`) likewise take turns step by step in one process, each with its own copy of
the policy, reference and optimizer; every engine gets the policy's weights after every optimizer step (for vLLM:
`update_weights` = `collective_rpc("reload_weights")`, the `sync_s` row). What dominates, measured:
docs/performance.md; the vLLM comparison: docs/vllm.md.

Last line: {"sec_per_step": ..., "generate_s": ..., "verify_s": ..., "train_s": ...} (the last variant's: the
optimised one, on the last backend listed).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import statistics
import time
from typing import Any

PARTS = ("generate_s", "verify_s", "train_s", "ref_s", "fwd_bwd_s", "optimizer_s", "sync_s", "sec_per_step")


def pick_prompts(tokenizer, n: int, target: int = 50):
    """The n GSM8K test questions whose token length is closest to `target`."""
    from tasks.registry import get_task

    exs = get_task("gsm8k").load("test")
    return sorted(exs, key=lambda e: (abs(len(tokenizer(e.question)["input_ids"]) - target), e.id))[:n]


def full_logsoftmax_token_logprobs(logits, tokens, *, temperature=1.0, with_entropy=False, chunk_elems=0):
    """The pre-optimisation path (for --baseline): a float32 copy of all logits, then log-softmax gather and
    entropy over the full [N, V] tensor, all of it kept for the backward."""
    from rlvr.algos import entropy_from_logits, logprobs_from_logits

    z = logits.float() / temperature
    return logprobs_from_logits(z, tokens), (entropy_from_logits(z) if with_entropy else None)


def generate_engine(model, tok, autocast_bf16: bool):
    """The pre-optimisation sampler (for --baseline): the HF engine driving `model.generate` (multinomial draw,
    logits processors, growing DynamicCache, every row of a group prefilled) with a log-prob-recording
    processor, as rlvr/rollout/hf.py did before it got its own decode loop."""
    import torch
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
    from transformers.generation.logits_process import MinNewTokensLengthLogitsProcessor

    from rlvr.rollout.hf import HFEngine

    class Recorder(LogitsProcessor):
        def __init__(self, temperature):
            self.t, self.prev, self.steps = temperature or 1.0, None, []

        def __call__(self, input_ids, scores):
            if self.prev is not None:
                self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
            self.prev = torch.log_softmax(scores.float() / self.t, dim=-1)
            return scores

    class GenerateEngine(HFEngine):
        def _generate_chunk(self, prompt_ids, params, n_gen):
            rows = [ids for ids in prompt_ids for _ in range(n_gen)]
            input_ids, attention_mask = self._left_pad(rows)
            rec = Recorder(params.temperature)
            procs = [rec, MinNewTokensLengthLogitsProcessor(input_ids.shape[1], params.min_new_tokens,
                                                            torch.tensor(self.eos_ids, device=input_ids.device))]
            cfg = GenerationConfig(do_sample=True, temperature=params.temperature, top_k=0, top_p=1.0,
                                   max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_ids,
                                   pad_token_id=self.pad_id, repetition_penalty=1.0)
            with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                seq = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=cfg,
                                          logits_processor=LogitsProcessorList(procs))
            comps = seq[:, input_ids.shape[1]:]
            steps = rec.steps + [rec.prev.gather(1, comps[:, -1:]).squeeze(1)]
            lps = torch.stack(steps[:comps.shape[1]], 1)
            flat = [self._rollout(ids, c, lp, -1, params) for ids, c, lp in zip(rows, comps.tolist(), lps.tolist())]
            return [flat[i:i + n_gen] for i in range(0, len(flat), n_gen)]

    return GenerateEngine(model, tok, autocast_bf16=autocast_bf16)


@dataclasses.dataclass
class Variant:
    """One configuration of the step: its own policy, reference, optimizer and rollout engine."""

    name: str
    baseline: bool
    backend: str
    model: Any
    ref: Any
    opt: Any
    engine: Any
    cfg: Any
    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def active(self):
        """The baseline swaps the full-log-softmax path into completion_logprobs while it runs."""
        import rlvr.algos

        fast = rlvr.algos.token_logprobs
        if self.baseline:
            rlvr.algos.token_logprobs = full_logsoftmax_token_logprobs
        try:
            yield
        finally:
            rlvr.algos.token_logprobs = fast


def build_variant(name: str, baseline: bool, backend: str, base_model, tok, args, pack: bool = False,
                  share: bool | str = "auto", bf16_params: bool = False) -> Variant:
    import torch

    from rlvr.distributed import prepare, reference_model
    from rlvr.rollout import get_engine
    from rlvr.trainers.common import build_optimizer
    from rlvr.trainers.grpo import GRPOConfig

    bf16 = not args.no_bf16
    model = copy.deepcopy(base_model)
    model.set_attn_implementation("sdpa" if baseline else args.attn)
    micro = 8 if baseline else args.micro_batch
    cfg = GRPOConfig(prompts_per_step=4, group_size=8, max_new_tokens=64, min_new_tokens=64, beta=0.04,
                     dynamic_sampling=False, micro_batch=micro, bf16=bf16, lr=1e-6, fused_adamw=not baseline,
                     share_prompt_forward=False if baseline else share, bf16_params=bf16_params)
    ref = reference_model(model, pack_bf16=bf16 and pack,   # pack: linears pre-packed in bf16 (--compare-pack)
                          param_dtype=torch.bfloat16 if bf16_params else None)
    if baseline and backend == "hf":
        engine = generate_engine(model, tok, bf16)
    elif not bf16 or backend != "hf":
        sizes = {"kv_cache_gib": args.vllm_kv_gib} if backend == "vllm" else {}
        engine = get_engine(backend, model=model, tokenizer=tok, autocast_bf16=bf16, **sizes)
    else:  # a bf16 copy samples (no per-step weight casts); update_weights copies the fp32 weights into it
        engine = get_engine("hf", model=model, tokenizer=tok, dtype="bfloat16", pack_weights=pack)
        if args.gen_attn != "auto":
            engine.model.set_attn_implementation(args.gen_attn)
    opt = build_optimizer(model, cfg.lr, fused=cfg.fused_adamw)
    tr = prepare(model, opt, None, grad_clip=cfg.grad_clip, bf16=bf16, bf16_params=bf16_params)
    return Variant(name, baseline, backend, model, ref, tr, engine, cfg)


def run_step(v: Variant, task, examples, tok, step: int) -> dict[str, float]:
    from rlvr.trainers.grpo import PromptStream, collect_batch, policy_update

    with v.active():
        t0 = time.perf_counter()
        v.model.eval()
        batch = collect_batch(v.engine, task, examples, PromptStream(len(examples), seed=step), v.cfg, tok,
                              seed=step)
        t1 = time.perf_counter()
        v.model.train()
        m = policy_update(v.model, v.ref, v.opt, batch, v.cfg)
        t2 = time.perf_counter()
        v.engine.update_weights(v.model)
        t3 = time.perf_counter()
    row = {"step": step, "sec_per_step": t3 - t0, "generate_s": batch.metrics["time/generate_s"],
           "verify_s": batch.metrics["time/verify_s"], "train_s": t3 - t1, "ref_s": m["time/ref_s"],
           "optimizer_s": m["time/optimizer_s"], "sync_s": t3 - t2,
           "new_tokens": int(batch.packed.completion_mask.sum()),
           "train_tflop": train_flop(v.model, batch.packed,
                                     v.cfg.micro_batch if shares(v) else None) / 1e12}
    row["fwd_bwd_s"] = (t2 - t1) - row["ref_s"] - row["optimizer_s"]
    v.rows.append(row)
    return row


def train_flop(model, packed, micro_batch: int | None = None) -> float:
    """Matmul FLOPs of one step's training passes: the reference forward plus the policy forward+backward
    (= 3 forwards), each 2·(linear weights of the layers)·(positions run) + 2·d·V·(kept logit rows); attention's
    own score/value products (2·2·T_q·T_k·d per layer and sequence) are included, padding counted as work.

    micro_batch: the passes share prompts within micro-batches of this many rows (share_prompt_forward): each
    distinct prompt runs once (P positions, one logit row), then each row its C - 1 completion inputs over
    P + C - 1 keys; a micro-batch of distinct prompts runs the plain pass. None: every row runs all P + C
    positions and keeps C + 1 logit rows."""
    import torch

    from rlvr.models.shared_prompt import distinct_prompts

    cfg = model.config
    B, P = packed.prompt_ids.shape
    C = packed.completion_ids.shape[1]
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    per_pos = 4 * cfg.hidden_size * cfg.num_hidden_layers     # attention FLOPs per (query, key) pair

    def one_pass(b: int, U: int | None) -> tuple[int, int, int]:
        """(positions, attention pairs, logit rows) of b rows holding U distinct prompts (None: not shared)."""
        if U is None or U == b:   # the plain pass (shared_prompt_logits falls back to it when nothing repeats)
            return b * (P + C), b * (P + C) ** 2, b * (C + 1)
        return U * P + b * (C - 1), U * P * P + b * (C - 1) * (P + C - 1), U + b * (C - 1)

    step = B if micro_batch is None else micro_batch
    passes = []
    for start in range(0, B, step):
        rows = slice(start, min(B, start + step))
        U = None if micro_batch is None else len(distinct_prompts(packed.prompt_ids[rows], packed.prompt_mask[rows])[0])
        passes.append(one_pass(rows.stop - rows.start, U))
    positions, pairs, logit_rows = (sum(col) for col in zip(*passes))
    fwd = 2 * linear * positions + per_pos * pairs + 2 * head.weight.numel() * logit_rows
    return 4.0 * fwd


def matmul_tflops(device, reps: int = 5, n: int = 2048) -> float:
    """The bf16 matmul rate of the training device right now (best of `reps` n³ products; on the CPU at the
    current thread count): the ceiling the training passes are measured against. On a shared CPU it moves 2-4x
    with the load from other jobs."""
    import torch

    a, b = (torch.randn(n, n, dtype=torch.bfloat16, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def shares(v: Variant) -> bool:
    """Whether the variant's training passes share prompts (its setting resolved on its model's device)."""
    from rlvr.models.shared_prompt import share_prompts_on
    return share_prompts_on(v.model, v.cfg.share_prompt_forward)


def ref_label(v: Variant) -> str:
    from rlvr.models.packed_linear import is_packed
    dtype = str(next(v.ref.parameters()).dtype).removeprefix("torch.")
    return f"{dtype}, linears pre-packed in bf16" if is_packed(v.ref) else dtype


def sampler_label(v: Variant) -> str:
    if v.baseline and type(v.engine).__name__ == "GenerateEngine":
        return "model.generate on the fp32 module"
    weights = getattr(v.engine, "model", None)
    dtype = str(next(weights.parameters()).dtype).removeprefix("torch.") if weights is not None \
        else getattr(v.engine, "dtype", "?")
    from rlvr.models.packed_linear import is_packed
    packed = weights is not None and is_packed(weights)
    attn = f", {weights.config._attn_implementation} attention" if weights is not None else ""
    return f"{type(v.engine).__name__} ({dtype} weights{', shared' if weights is v.model else ''}" \
           f"{', linears pre-packed' if packed else ''}{attn})"


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    timed = rows[1:] or rows
    return {k: statistics.median(r[k] for r in timed) for k in PARTS}


def print_table(title: str, med: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"{'part':<16}{'median s':>10}{'share':>8}")
    for k in PARTS:
        indent = "  " if k in ("ref_s", "fwd_bwd_s", "optimizer_s", "sync_s") else ""
        print(f"{indent + k:<16}{med[k]:>10.2f}{med[k] / med['sec_per_step']:>8.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="HF model dir (default: SmolLM2-135M converted from GGUF)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--backend", default="hf", help="rollout engine: hf | vllm | hf,vllm (alternately)")
    ap.add_argument("--vllm-kv-gib", type=float, default=0.25,
                    help="vLLM's KV cache on CPU (a step needs ~0.1 GiB; the engine's 1 GiB default costs RAM)")
    ap.add_argument("--no-bf16", action="store_true", help="fp32 everywhere")
    ap.add_argument("--micro-batch", type=int, default=32, help="sequences per forward/backward")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--attn", default="eager", help="attention kernel of the training passes: eager | sdpa")
    ap.add_argument("--gen-attn", default="auto",
                    help="attention kernel of the bf16 sampling copy (auto: the engine's, sdpa_gqa on CPU)")
    ap.add_argument("--baseline", action="store_true", help="only the pre-optimisation settings")
    ap.add_argument("--compare", action="store_true", help="baseline and optimised steps alternately")
    ap.add_argument("--compare-pack", action="store_true",
                    help="optimised, and optimised with pre-packed bf16 linears (sampler, reference), alternately")
    ap.add_argument("--compare-share", action="store_true",
                    help="optimised with and without the shared-prompt forward, alternately")
    ap.add_argument("--no-share-prompts", action="store_true",
                    help="every row runs its own prompt in the training passes (share_prompt_forward: false)")
    ap.add_argument("--fp32-params", action="store_true",
                    help="policy passes on the fp32 weights under autocast (bf16_params: false) instead of a bf16 "
                         "copy with fp32 master weights")
    ap.add_argument("--compare-bf16-params", action="store_true",
                    help="optimised with fp32 parameters under autocast and with bf16 parameters, alternately")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of the last optimised step")
    args = ap.parse_args()

    import torch

    from rlvr.trainers.common import load_model_and_tokenizer
    from tasks.base import PromptTemplate
    from tasks.registry import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from rlvr.models.gguf import smollm2_dir
        args.model = str(smollm2_dir())
    model, tok = load_model_and_tokenizer(args.model)
    task = get_task("gsm8k")
    task = dataclasses.replace(task, template=PromptTemplate(plain="{user}", chat=False), _cache={})
    examples = pick_prompts(tok, 4)
    share = False if args.no_share_prompts else "auto"
    # (name, baseline, pre-packed linears, share prompts, bf16 parameters)
    bp = not args.fp32_params and not args.no_bf16
    wanted = [("baseline", True, False, False, False)] if args.baseline else [("optimised", False, False, share, bp)]
    if args.compare:
        wanted = [("baseline", True, False, False, False), ("optimised", False, False, share, bp)]
    if args.compare_pack:   # the opt-in pre-packed linears against the default
        wanted = [("optimised", False, False, share, bp), ("packed", False, True, share, bp)]
    if args.compare_share:
        wanted = [("unshared", False, False, False, bp), ("optimised", False, False, True, bp)]
    if args.compare_bf16_params:
        wanted = [("fp32 params", False, False, share, False), ("optimised", False, False, share, True)]
    backends = args.backend.split(",")
    variants = [build_variant(name + (f"/{b}" if len(backends) > 1 else ""), base, b, model, tok, args, pack, sh, p)
                for b in backends for name, base, pack, sh, p in wanted]
    del model
    device = next(variants[0].model.parameters()).device
    peak = [matmul_tflops(device)]
    for step in range(args.steps + 1):
        for v in variants:
            last = step == args.steps and args.profile and not v.baseline
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if last \
                else contextlib.nullcontext()
            with prof:
                row = run_step(v, task, examples, tok, step)
            print(f"{v.name} step {step}{' (warm-up)' if step == 0 else ''}: " +
                  "  ".join(f"{k}={row[k]:.2f}" for k in PARTS), flush=True)
            if last:
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    header = (f"GRPO step, {args.model.rstrip('/').split('/')[-1]}, 4x8 completions x 64 tokens, beta=0.04, "
              f"bf16={not args.no_bf16}, threads={torch.get_num_threads()}")
    for v in variants:
        c = v.cfg
        print_table(f"{header}\n{v.name}: backend={v.backend}, micro_batch={c.micro_batch}, "
                    f"attn={v.model.config._attn_implementation}, "
                    f"logprobs={'full fp32 log-softmax' if v.baseline else 'chunked token_logprobs'}, "
                    f"prompts={'shared per group' if shares(v) else 'one per row'}, "
                    f"sampler={sampler_label(v)}, reference={ref_label(v)}, "
                    f"optimizer={'fused' if c.fused_adamw else 'foreach'} AdamW, "
                    f"params={'bf16 (fp32 master)' if c.bf16_params else 'fp32 under autocast'}",
                    medians(v.rows))
    peak.append(matmul_tflops(device))
    last, med = variants[-1], medians(variants[-1].rows)
    tflop = statistics.median(r["train_tflop"] for r in last.rows)
    passes = med["ref_s"] + med["fwd_bwd_s"]
    print(f"\nbf16 matmul on {device} (2048^3, best of 5, before/after the steps): {peak[0]:.2f} / {peak[1]:.2f} "
          f"TFLOP/s.\n{last.name} training passes (reference forward + policy forward/backward): {tflop:.2f} TFLOP in "
          f"{passes:.2f} s = {tflop / passes:.2f} TFLOP/s, {tflop / passes / max(peak):.0%} of that matmul rate.")
    for v in variants:
        v.engine.close()
    out = {k: round(med[k], 3) for k in ("sec_per_step", "generate_s", "verify_s", "train_s")}
    out.update({"train_tflop": round(tflop, 3), "train_tflops": round(tflop / passes, 3),
                "matmul_tflops": round(max(peak), 3)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
