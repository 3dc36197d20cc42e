"""`language_consistency`: DeepSeek-R1's language-consistency reward — the share of the chain of thought written
in the target language's script (R1 uses "the proportion of target language words in the CoT", sec. 2.3.3).

Tokens: maximal runs of letters of one Unicode script; ideographic scripts (CJK, Hiragana, Katakana) count one
token per character, since they are not space-separated. The script of a letter is the first word of its Unicode
name (LATIN, CYRILLIC, GREEK, CJK, HANGUL, ARABIC, ...). Digits, punctuation, maths symbols and tags like <think> are ignored.

    reward = #tokens in a target script / #tokens        (1.0 when there are no letters at all)

e.g. scripts [LATIN], "so x等于 3" -> tokens so, x, 等, 于 -> 2 / 4 = 0.5.
`section: think` scores only the text inside <think>...</think> (the whole response when there is no such
block); `section: all` scores everything. Status `correct` when reward >= `threshold`, else `wrong`.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["LanguageConsistencyVerifier", "script_tokens", "target_share"]

_LETTER_RUN = re.compile(r"[^\W\d_]+")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")          # <think>, </answer>: markup, not language
_IDEOGRAPHIC = {"CJK", "HIRAGANA", "KATAKANA"}


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def script_tokens(text: str) -> list[tuple[str, str]]:
    """(script, token) for each same-script letter run; ideographic scripts give one token per character."""
    out: list[tuple[str, str]] = []
    for run in _LETTER_RUN.findall(_TAG.sub(" ", text)):
        start, cur = 0, _script(run[0])
        for i in range(1, len(run) + 1):
            s = _script(run[i]) if i < len(run) else None
            if s != cur:
                seg = run[start:i]
                out += [(cur, c) for c in seg] if cur in _IDEOGRAPHIC else [(cur, seg)]
                start, cur = i, s
    return out


def target_share(text: str, scripts: frozenset[str]) -> tuple[float, int]:
    """(share of tokens in `scripts`, token count); share 1.0 when there are no tokens."""
    toks = script_tokens(text)
    if not toks:
        return 1.0, 0
    return sum(s in scripts for s, _ in toks) / len(toks), len(toks)


@register_verifier("language_consistency")
@dataclass(frozen=True)
class LanguageConsistencyVerifier:
    """Options: `scripts` (target scripts, default [LATIN]), `section` (think | all), `threshold`."""

    scripts: tuple[str, ...] = ("LATIN",)
    section: str = "think"
    threshold: float = 0.95

    def __post_init__(self) -> None:
        object.__setattr__(self, "scripts", tuple(s.upper() for s in ([self.scripts] if isinstance(self.scripts, str)
                                                                    else self.scripts)))
        if not self.scripts:
            raise ValueError("bad options for verifier 'language_consistency': scripts must not be empty")
        if self.section not in ("think", "all"):
            raise ValueError(f"bad options for verifier 'language_consistency': section must be think or all, "
                             f"got {self.section!r}")

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        text = response or ""
        if self.section == "think" and (m := _THINK.search(text)):
            text = m.group(1)
        share, n = target_share(text, frozenset(self.scripts))
        return Verdict("correct" if share >= self.threshold else "wrong", share,
                       {"share": share, "tokens": n, "reason": f"{share:.0%} of {n} tokens in {'/'.join(self.scripts)}"})
