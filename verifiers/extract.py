"""Final-answer extraction from free-form model output: pure string work, no sympy.

Each extractor takes the response text and returns the answer *snippet* (still LaTeX / plain text) or None.
They are registered by name so `MathVerifier(order=(...))` chooses which ones run and in what order; the first
extractor that finds something wins (a box holding garbage is the model's answer, not a cue to go hunting for
a stray number elsewhere).

| name          | finds                                                               |
|---------------|---------------------------------------------------------------------|
| `boxed`       | the last `\\boxed{...}` / `\\fbox{...}` (nested braces), or `\\boxed 5` |
| `answer_tag`  | the last `<answer>...</answer>` block                               |
| `gsm8k`       | the last `#### 1,234` line                                          |
| `answer_is`   | "the (final) answer is X" / "Answer: X" (the last one)              |
| `last_number` | the last number in the text (`-1,234.5`, `3/4`, `2e-3`)             |

Every extractor is linear in the input length (one pass or a simple regex without nested quantifiers), so 50 KB
of LaTeX or 500-deep braces cost milliseconds, not a timeout.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

__all__ = ["EXTRACTORS", "DEFAULT_ORDER", "extract_answer", "last_boxed", "register_extractor"]

Extractor = Callable[[str], "str | None"]
EXTRACTORS: dict[str, Extractor] = {}
DEFAULT_ORDER: tuple[str, ...] = ("boxed", "answer_tag", "gsm8k", "answer_is", "last_number")


def register_extractor(name: str):
    def deco(fn: Extractor) -> Extractor:
        if name in EXTRACTORS:
            raise ValueError(f"extractor {name!r} is already registered")
        EXTRACTORS[name] = fn
        return fn

    return deco


def extract_answer(text: str, order: Sequence[str] = DEFAULT_ORDER) -> tuple[str, str] | None:
    """Run the extractors in `order`; return (extractor name, snippet) of the first hit, else None."""
    for name in order:
        snippet = EXTRACTORS[name](text)
        if snippet is not None and snippet.strip():
            return name, snippet.strip()
    return None


def _closing_braces(text: str) -> dict[int, int]:
    """Map the index of every `{` to the index of its matching `}` (unmatched ones are absent). O(len)."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for i, ch in enumerate(text):
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            stack.append(i)
        elif ch == "}" and stack and (i == 0 or text[i - 1] != "\\"):
            match[stack.pop()] = i
    return match


_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{|[^\s{\\])")


@register_extractor("boxed")
def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}`; `\\boxed 5` takes the next token."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    starts = list(_BOX_RE.finditer(text))
    if not starts:
        return None
    match = _closing_braces(text) if any(m.group(1) == "{" for m in starts) else {}
    for m in reversed(starts):
        open_at = m.start(1)
        if m.group(1) == "{":
            close_at = match.get(open_at)
            if close_at is not None:
                return text[open_at + 1:close_at]
        else:  # `\boxed 5` / `\boxed x$`: up to whitespace, `$` or end
            token = re.match(r"[^\s$]+", text[open_at:])
            return token.group(0) if token else None
    return None


_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


@register_extractor("answer_tag")
def answer_tag(text: str) -> str | None:
    """Content of the last `<answer>...</answer>` block; a box inside it wins over the surrounding words."""
    if "<answer>" not in text.lower():
        return None
    found = _ANSWER_TAG_RE.findall(text)
    if not found:
        return None
    inner = found[-1]
    return last_boxed(inner) or inner


_GSM8K_RE = re.compile(r"####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+)")


@register_extractor("gsm8k")
def gsm8k(text: str) -> str | None:
    """The number after the last `####` (commas removed: `#### 1,000` -> `1000`)."""
    if "####" not in text:
        return None
    found = _GSM8K_RE.findall(text)
    return found[-1].replace(",", "") if found else None


# "the answer is X." / "final answer: X" / "Answer: X". X runs from the *last* anchor to the end of the line or to a
# sentence-ending period (one followed by whitespace or the end, so `3.5` survives). Last anchor, so that
# Minerva's "Final Answer: The final answer is $5$. I hope it is correct." gives `5`.
_ANSWER_ANCHOR_RE = re.compile(r"answer\s+is\s*:?|answer\s*:", re.IGNORECASE)
_SENTENCE_RE = re.compile(r"\s*(.+?)(?:\.\s|\.$|\n|$)")


@register_extractor("answer_is")
def answer_is(text: str) -> str | None:
    """The X of the last "the answer is X" / "Answer: X" (surrounding `$`, `**` and spaces stripped)."""
    if "answer" not in text.lower():
        return None
    anchor = None
    for anchor in _ANSWER_ANCHOR_RE.finditer(text):
        pass
    if anchor is None:
        return None
    found = _SENTENCE_RE.match(text, anchor.end())
    if not found:
        return None
    snippet = found.group(1).strip().strip("*").strip()
    if snippet.startswith("$") and snippet.endswith("$") and len(snippet) > 1:
        snippet = snippet.strip("$")
    return snippet or None


_NUMBER_RE = re.compile(r"(-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
                        r"(?:/[0-9]+)?|-?\.[0-9]+)(\\?%)?")


@register_extractor("last_number")
def last_number(text: str) -> str | None:
    """The last number in the text; thousands separators dropped (`1,000` -> `1000`), `3/4` kept whole,
    a trailing percent sign kept as LaTeX (`25%` -> `25\\%`)."""
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    if last is None:
        return None
    return last.group(1).replace(",", "") + ("\\%" if last.group(2) else "")
