"""Rebuild the vendored data files in this folder from the shared data copies (see SOURCES.md).

    python tasks/data/make_vendored.py [/path/to/shared/data]

Each output is `<task>_<split>.jsonl.gz`: the upstream records, same order, reduced to the fields the task
uses. gzip is written with mtime=0 and no file name, so a rebuild with the same zlib is byte-identical.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# output file -> (input file relative to the shared data dir, fields kept; None = the file verbatim)
FILES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "gsm8k_train": ("gsm8k/train.jsonl", ("question", "answer")),
    "gsm8k_test": ("gsm8k/test.jsonl", ("question", "answer")),
    "math500_test": ("prm800k_math_splits/test.jsonl",
                     ("problem", "answer", "subject", "level", "unique_id")),
    "math12k_train": ("prm800k_math_splits/train_problem_answer_only.jsonl", ("problem", "answer")),
    "aime24_test": ("qwen25_math_eval/aime24/test.jsonl", ("id", "problem", "answer")),
    "amc23_test": ("qwen25_math_eval/amc23/test.jsonl", ("id", "problem", "answer")),
    "minerva_math_test": ("qwen25_math_eval/minerva_math/test.jsonl", ("idx", "problem", "solution", "type")),
    "olympiadbench_test": ("qwen25_math_eval/olympiadbench/test.jsonl",
                           ("id", "question", "final_answer", "is_multiple_answer", "unit", "answer_type",
                            "subfield")),
    "mbpp": ("mbpp/mbpp.jsonl", None),          # code task: all fields, byte-identical (SOURCES_code.md)
}


def vendor(shared: Path, out_dir: Path = HERE) -> dict[str, int]:
    """Write every file in FILES; returns {output name: compressed size in bytes}."""
    sizes = {}
    for name, (rel, keep) in FILES.items():
        if keep is None:
            data = (shared / rel).read_bytes()
        else:
            lines = []
            with open(shared / rel, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        lines.append(json.dumps({k: rec[k] for k in keep}, ensure_ascii=False))
            data = ("\n".join(lines) + "\n").encode("utf-8")
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        path = out_dir / f"{name}.jsonl.gz"
        path.write_bytes(buf.getvalue())
        sizes[path.name] = len(buf.getvalue())
    return sizes


if __name__ == "__main__":
    default = os.environ.get("RLVR_SHARED_DATA", HERE.parents[2] / "shared" / "data")
    for fname, size in vendor(Path(sys.argv[1] if len(sys.argv) > 1 else default)).items():
        print(f"{fname:32s} {size / 1e3:8.1f} kB")
