"""Dataset files that flow between stages: SFT pairs (`sft.jsonl`) and preference pairs (`pairs.jsonl`).

    sft.jsonl    {"prompt": rendered prompt, "completion": text, "question": raw question, ...provenance}
    pairs.jsonl  {"prompt": rendered prompt, "question": raw question, "chosen": text, "rejected": text, ...}

`prompt` is what the policy saw (DPO and SFT train on it); `question` is the raw problem, which is what a
reward-model verifier sees at RL time (`VerifyContext.prompt`), so RM training uses it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from rlvr.errors import ConfigError, DataError
from rlvr.trainers.checkpoint import atomic_write_text


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    atomic_write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return Path(path)


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) per line; a bad line is one DataError naming file:line."""
    from tasks.data import read_jsonl
    if not Path(path).exists():
        raise DataError(f"{path}: file not found")
    return [(row.where, row.data) for row in read_jsonl(Path(path))]


def read_sft_file(path: Path) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from a JSONL file with `prompt` and `completion` strings."""
    out = []
    for where, rec in read_records(Path(path)):
        p, c = rec.get("prompt"), rec.get("completion")
        if not isinstance(p, str) or not isinstance(c, str):
            raise DataError(f"{where}: an SFT record needs string fields 'prompt' and 'completion'")
        out.append((p, c))
    return out


def source_sft_pairs(task: Any, examples: Sequence[Any], tokenizer: Any, target: str, *, where: str) -> list:
    """Labelled examples → SFTExample(rendered prompt, target.format(gold, question, meta fields)); used by
    `rlvr train`'s SFT stages and `rlvr run`'s source data. A missing field is one error naming `where`."""
    from rlvr.trainers.sft import SFTExample
    out = []
    for ex in examples:
        fields = {**ex.meta, "gold": ex.gold, "question": ex.question}
        try:
            completion = target.format(**fields)
        except KeyError as e:
            raise ConfigError(f"{where}: field {e} is not in the examples "
                              f"(fields: {', '.join(sorted(fields))})") from None
        out.append(SFTExample(task.render(ex, tokenizer), completion))
    return out


def rm_pairs_file(pairs: Path, out: Path) -> Path:
    """A copy of a pairs file keyed for reward-model training: prompt = the raw question (what the RM verifier
    will be shown at RL time), chosen/rejected unchanged."""
    rows = []
    for where, rec in read_records(Path(pairs)):
        if not all(isinstance(rec.get(k), str) for k in ("chosen", "rejected")):
            raise DataError(f"{where}: a pair needs string fields 'chosen' and 'rejected'")
        rows.append({"prompt": rec.get("question", rec.get("prompt", "")), "chosen": rec["chosen"],
                     "rejected": rec["rejected"]})
    return write_jsonl(out, rows)
