"""Seconds per training step with 1 and 2 processes: plain PyTorch, DeepSpeed ZeRO-2 on 1 and 2 ranks, ZeRO-3 on 2.

Fixed global work per step: `--batch` sequences of `--length` tokens through a random Llama (`--width`, `--layers`,
the tiny model's 74-token vocabulary), one forward/backward per `--micro` sequences, one AdamW step — the shape of
an SFT step or a GRPO policy update. Each rank gets batch / world sequences (the loss is the global token mean, as
in the trainers). One warm-up step, then the median of `--steps` timed steps (barrier-synchronised).
On this 2-core CPU box two ranks share the cores and gloo's all-reduce runs over shared memory; on GPUs each rank
has its own device, so these numbers say what the scale-out path costs here, not what it gains on a cluster.
ZeRO-3 runs with every tensor partitioned (tests/distributed/zero3_partitioned.json) and also reports what one
`Trainable.gathered()` costs (all-gather the full weights, hooks off and back on: paid per generation round).

    python benchmarks/scaling.py [--width 256] [--layers 4] [--batch 32] [--length 64] [--steps 5]

Last line: {"plain_1proc_s": ..., "zero2_1proc_s": ..., "zero2_2proc_s": ..., "zero3_2proc_s": ..., "speedup_2proc": ...,
             "zero3_gather_s": ..., "params": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
ZERO2 = REPO / "recipes" / "deepspeed" / "zero2.json"
ZERO3 = REPO / "tests" / "distributed" / "zero3_partitioned.json"


def build_model(width: int, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=74, hidden_size=width, intermediate_size=3 * width, num_hidden_layers=layers,
                      num_attention_heads=max(1, width // 32), num_key_value_heads=max(1, width // 32),
                      max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def time_steps(args, ds_config: str | None) -> tuple[list[float], int, list[float]]:
    """Per-step wall seconds (after one warm-up) on this rank; the parameter count; seconds per gathered()."""
    import torch

    from rlvr.distributed import DistributedConfig, context, prepare
    from rlvr.trainers.common import build_optimizer

    torch.set_num_threads(1)
    ctx = context()
    model = build_model(args.width, args.layers)
    tr = prepare(model, build_optimizer(model, 1e-4), DistributedConfig(deepspeed=ds_config), grad_clip=1.0)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(4, 74, (args.batch, args.length), generator=g)
    mine = data[ctx.rank::ctx.world_size]
    n_tok = args.batch * (args.length - 1)
    times = []
    for step in range(args.steps + 1):
        ctx.barrier()
        t0 = time.perf_counter()
        for s in ctx.micro_batches(len(mine), args.micro):
            x = mine[s]
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                    reduction="sum")
            tr.backward(nll / n_tok)
        tr.step()
        ctx.barrier()
        if step:                                   # step 0 is the warm-up
            times.append(time.perf_counter() - t0)
    gathers = []
    for _ in range(3):
        ctx.barrier()
        t0 = time.perf_counter()
        with tr.gathered():
            pass
        gathers.append(time.perf_counter() - t0)
    return times, sum(p.numel() for p in model.parameters()), gathers


def launch(args, n_procs: int, out: Path, ds_config: Path) -> dict:
    launcher = Path(sys.executable).parent / "deepspeed"
    launcher = str(launcher) if launcher.exists() else shutil.which("deepspeed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"), "OMP_NUM_THREADS": "1"}
    cmd = [launcher, "--num_gpus", str(n_procs), "--master_port", str(port), __file__, "--worker", str(out),
           "--ds", str(ds_config),
           "--width", str(args.width), "--layers", str(args.layers), "--batch", str(args.batch),
           "--length", str(args.length), "--micro", str(args.micro), "--steps", str(args.steps)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"deepspeed launch failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32, help="global sequences per step")
    ap.add_argument("--length", type=int, default=64, help="tokens per sequence")
    ap.add_argument("--micro", type=int, default=8, help="sequences per forward/backward")
    ap.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ds", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--local_rank", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:                                # one rank under the deepspeed launcher
        from rlvr.distributed import context
        times, params, gathers = time_steps(args, args.ds)
        if context().is_main:
            Path(args.worker).write_text(json.dumps({"times": times, "params": params, "gathers": gathers}))
        return

    plain, params, _ = time_steps(args, None)
    rows = [("plain PyTorch", 1, plain)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, cfg in (("DeepSpeed ZeRO-2", 1, ZERO2), ("DeepSpeed ZeRO-2", 2, ZERO2),
                             ("DeepSpeed ZeRO-3", 2, ZERO3)):
            res = launch(args, n, Path(tmp) / f"ds{n}.json", cfg)
            rows.append((name, n, res["times"]))
        gather_s = statistics.median(res["gathers"])
    med = {f"{name}/{n}": statistics.median(t) for name, n, t in rows}
    print(f"model: random Llama width {args.width}, {args.layers} layers, {params / 1e6:.2f}M params; "
          f"{args.batch} x {args.length} tokens per step, micro-batch {args.micro}")
    print(f"{'setup':<20}{'procs':>6}{'s/step (median)':>18}{'min':>9}{'max':>9}{'tokens/s':>11}")
    for name, n, t in rows:
        m = statistics.median(t)
        print(f"{name:<20}{n:>6}{m:>18.3f}{min(t):>9.3f}{max(t):>9.3f}{args.batch * args.length / m:>11.0f}")
    print(f"ZeRO-3, 2 processes: one gathered() (full weights for generation) {gather_s * 1e3:.1f} ms")
    z1, z2 = med["DeepSpeed ZeRO-2/1"], med["DeepSpeed ZeRO-2/2"]
    print(json.dumps({"plain_1proc_s": round(med["plain PyTorch/1"], 4), "zero2_1proc_s": round(z1, 4),
                      "zero2_2proc_s": round(z2, 4), "zero3_2proc_s": round(med["DeepSpeed ZeRO-3/2"], 4),
                      "speedup_2proc": round(z1 / z2, 3), "zero3_gather_s": round(gather_s, 4), "params": params}))


if __name__ == "__main__":
    main()
