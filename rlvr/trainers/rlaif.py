"""RLAIF / Constitutional AI data: self-critique → revision → preference pairs and SFT data; AI-judge labelling.

Constitutional AI (Bai et al. 2022, arXiv:2212.08073), supervised phase: for each (prompt, response) a principle
is sampled from a constitution; the model critiques its response per the principle's critique request, then
revises it per the revision request. The revisions are SFT data; (revised ≻ original) are preference pairs
for any `rlvr.trainers.dpo` loss (same JSONL format: prompt / chosen / rejected).

AI feedback (RLAIF, Lee et al. 2023, arXiv:2309.00267): a judge model reads the prompt, a principle's
question and two responses labelled (A) and (B), and its next-token probabilities of "A" vs "B" give
P(A ≻ B). Position bias is removed by asking twice with the order swapped and averaging:
    P(a ≻ b) = ½ [ p(A | a, b) + p(B | b, a) ],    p(A | x, y) = e^{l_A} / (e^{l_A} + e^{l_B})
Pairs whose |P - ½| is below `min_confidence` are dropped.

Differences from the papers: no red-teaming prompt set ships here (bring your prompts), critiques and
revisions are single samples (no few-shot exemplars unless the templates include them), and the judge
scores only the option letter (no chain-of-thought before it).
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlvr.config import Config, read_yaml
from rlvr.errors import ConfigError, DataError
from rlvr.trainers.checkpoint import atomic_write_text
from rlvr.trainers.sft import SFTExample

__all__ = ["Principle", "RLAIFConfig", "Revision", "load_constitution", "critique_and_revise", "revision_pairs",
           "revision_sft", "Scorer", "model_scorer", "judge_preference", "label_pairs", "write_jsonl"]


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str          # critique request
    revision: str          # revision request
    judge: str             # the question an AI judge answers with (A) or (B)


def load_constitution(path: str | Path) -> list[Principle]:
    """A YAML file `principles: [{name, critique, revision, judge}]` (judge optional), or a text file with one
    principle per line (used as critique, revision and judge text alike). Errors name the file and entry."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: constitution file not found")
    if path.suffix in (".yaml", ".yml"):
        raw = read_yaml(path).get("principles")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{path}: needs a non-empty list 'principles'")
        out = []
        for i, p in enumerate(raw):
            if not isinstance(p, dict) or not {"critique", "revision"} <= set(p) or set(p) - {
                    "name", "critique", "revision", "judge"}:
                raise ConfigError(f"{path}: principles[{i}] needs critique and revision (and optional name, judge)")
            out.append(Principle(str(p.get("name", f"principle_{i}")), str(p["critique"]), str(p["revision"]),
                                 str(p.get("judge", "Which response follows the principle better?"))))
        return out
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ConfigError(f"{path}: no principles (one per line)")
    return [Principle(f"line_{i + 1}", ln, ln, ln) for i, ln in enumerate(lines)]


class RLAIFConfig(Config):
    critique_template: str = ("{prompt}{response}\n\nCritique request: {critique}\nCritique:")
    """prompt for the critique; fields: prompt, response, critique"""
    revision_template: str = ("{prompt}{response}\n\nCritique request: {critique}\nCritique:{critique_text}\n\n"
                              "Revision request: {revision}\nRevision:")
    """prompt for the revision; fields: prompt, response, critique, critique_text, revision"""
    judge_template: str = ("Consider this request:\n{prompt}\n\n{question}\n(A) {a}\n(B) {b}\n"
                           "The better response is (")
    """judge prompt, followed by the option letter; fields: prompt, question, a, b"""
    max_new_tokens: int = 128
    """budget for each critique and each revision"""
    temperature: float = 1.0
    """sampling temperature for critiques and revisions"""
    min_confidence: float = 0.0
    """judge: keep a pair only if |P(a ≻ b) - ½| >= this"""


@dataclass(frozen=True)
class Revision:
    prompt: str
    response: str
    principle: str
    critique: str
    revision: str


def critique_and_revise(engine: Any, prompts: Sequence[str], responses: Sequence[str],
                        principles: Sequence[Principle], cfg: RLAIFConfig, seed: int = 0) -> list[Revision]:
    """One critique and one revision per (prompt, response), each under a principle drawn with `seed`."""
    from rlvr.rollout import SamplingParams

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    if not principles:
        raise ConfigError("constitution: no principles")
    rng = random.Random(seed)
    chosen = [rng.choice(principles) for _ in prompts]
    params = SamplingParams(n=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=seed)
    crit_prompts = [cfg.critique_template.format(prompt=p, response=r, critique=pr.critique)
                    for p, r, pr in zip(prompts, responses, chosen)]
    critiques = [g[0].text for g in engine.generate(crit_prompts, params)]
    rev_prompts = [cfg.revision_template.format(prompt=p, response=r, critique=pr.critique, critique_text=c,
                                                revision=pr.revision)
                   for p, r, pr, c in zip(prompts, responses, chosen, critiques)]
    params = SamplingParams(n=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=seed + 1)
    revisions = [g[0].text.strip() for g in engine.generate(rev_prompts, params)]
    return [Revision(p, r, pr.name, c, v) for p, r, pr, c, v in zip(prompts, responses, chosen, critiques, revisions)]


def _useful(rev: Revision) -> bool:
    return bool(rev.revision) and rev.revision != rev.response.strip()


def revision_pairs(revisions: Sequence[Revision]) -> list[dict[str, str]]:
    """(revised ≻ original) pairs in the DPO JSONL format; empty or unchanged revisions are skipped."""
    return [{"prompt": r.prompt, "chosen": r.revision, "rejected": r.response, "principle": r.principle}
            for r in revisions if _useful(r)]


def revision_sft(revisions: Sequence[Revision]) -> list[SFTExample]:
    """The revisions as SFT examples (prompt → revised response); empty or unchanged revisions are skipped."""
    return [SFTExample(r.prompt, r.revision) for r in revisions if _useful(r)]


# ---------------------------------------------------------------------------------------------- AI judge
# A scorer maps (context, [continuation, ...]) -> log-prob of each continuation after the context [n].
Scorer = Callable[[str, Sequence[str]], torch.Tensor]


def model_scorer(model: torch.nn.Module, tokenizer: Any) -> Scorer:
    """A Scorer from an HF causal LM: summed log-probs of each continuation's tokens after the context."""
    from rlvr.trainers.common import completion_logprobs, pack

    def score(context: str, continuations: Sequence[str]) -> torch.Tensor:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        conts = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        if not ctx or not all(conts):
            raise DataError("judge: context and options must be non-empty after tokenisation")
        batch = pack([ctx] * len(conts), conts, tokenizer.pad_token_id)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                logp, _ = completion_logprobs(model, batch, share_prompts="auto")   # one context, several options
        finally:
            model.train(was)
        return logp.sum(-1)

    return score


def judge_preference(scorer: Scorer, prompt: str, a: str, b: str, question: str, cfg: RLAIFConfig) -> float:
    """P(a ≻ b) from the judge, averaged over both presentation orders (module doc)."""
    def p_first(x: str, y: str) -> torch.Tensor:
        lp = scorer(cfg.judge_template.format(prompt=prompt, question=question, a=x, b=y), ["A", "B"])
        return torch.softmax(lp.double(), dim=0)             # [P(A), P(B)] over the two letters
    return float(0.5 * (p_first(a, b)[0] + p_first(b, a)[1]))


def label_pairs(scorer: Scorer, items: Sequence[tuple[str, str, str]], principles: Sequence[Principle],
                cfg: RLAIFConfig, seed: int = 0) -> list[dict[str, Any]]:
    """(prompt, response_1, response_2) triples -> DPO pair records labelled by the judge under a sampled
    principle, with the judge's `confidence` P(chosen ≻ rejected); low-confidence pairs are dropped."""
    rng = random.Random(seed)
    out = []
    for prompt, x, y in items:
        principle = rng.choice(principles)
        p = judge_preference(scorer, prompt, x, y, principle.judge, cfg)
        if abs(p - 0.5) < cfg.min_confidence or p == 0.5:
            continue
        chosen, rejected = (x, y) if p > 0.5 else (y, x)
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "confidence": max(p, 1 - p),
                    "principle": principle.name})
    return out


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any] | SFTExample]) -> Path:
    """Write records (dicts or SFTExamples) as JSONL, atomically."""
    lines = [json.dumps(asdict(r) if isinstance(r, SFTExample) else r) for r in rows]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return Path(path)
