"""`format` / `format_partial`: does the response follow `<think>…</think><answer>…</answer>`?

Strict (status and the `format` reward):

    reward = 1.0 if the whole response matches  ^\\s*<think>.+?</think>\\s*<answer>.+?</answer>\\s*$  else 0.0

with each tag exactly once. With `prompt_opens_think=True` the prompt already ended with "<think>", so the
response starts inside the think block and must not open it again: ^.+?</think>\\s*<answer>.+?</answer>\\s*$.

Partial credit (`partial=True`, the default of `format_partial`), tag counting as in open-r1's tag-count reward:

    reward = (1 / T) * #{expected tags that occur exactly once}

where the expected tags are `<think>`, `</think>`, `<answer>`, `</answer>` (T = 4, so 0.25 each; without
`<think>` when the prompt opened it, T = 3). Status is still `correct` only when the strict format holds, so a
response with every tag once but text after `</answer>` earns 1.0 partial reward and status `wrong`.

Tag names are options (`think_tag`, `answer_tag`), e.g. `reasoning` / `solution`. `think_tag=None` drops the
think block: the whole response must be `<answer>…</answer>` (tiny models with no room to reason).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["FormatVerifier", "PartialFormatVerifier"]


@register_verifier("format")
@dataclass(frozen=True)
class FormatVerifier:
    """Options: `think_tag`, `answer_tag` (tag names without brackets), `prompt_opens_think` (the response
    starts inside the think block), `partial` (tag-count partial credit instead of 1/0)."""

    cheap = True    # one regex match: the verifier pool runs many such calls per task (verifiers/pool.py)

    think_tag: str | None = "think"
    answer_tag: str = "answer"
    prompt_opens_think: bool = False
    partial: bool = False

    def __post_init__(self) -> None:
        for field_name in ("think_tag", "answer_tag"):
            tag = getattr(self, field_name)
            if tag is None and field_name == "think_tag":
                continue
            if not re.fullmatch(r"[A-Za-z][\w-]*", tag or ""):
                raise ValueError(f"format verifier: {field_name}={tag!r} is not a valid tag name")

    def expected_tags(self) -> list[str]:
        t, a = self.think_tag, self.answer_tag
        if t is None:
            return [f"<{a}>", f"</{a}>"]
        tags = [f"<{t}>", f"</{t}>", f"<{a}>", f"</{a}>"]
        return tags[1:] if self.prompt_opens_think else tags

    def strict_ok(self, response: str) -> bool:
        if any(response.count(tag) != 1 for tag in self.expected_tags()):
            return False
        a = re.escape(self.answer_tag)
        if self.think_tag is None:
            return re.fullmatch(rf"\s*<{a}>.+?</{a}>\s*", response, re.DOTALL) is not None
        if self.prompt_opens_think and f"<{self.think_tag}>" in response:
            return False
        t = re.escape(self.think_tag)
        opener = "" if self.prompt_opens_think else rf"<{t}>"
        pattern = rf"\s*{opener}.+?</{t}>\s*<{a}>.+?</{a}>\s*"
        return re.fullmatch(pattern, response, re.DOTALL) is not None

    def tag_credit(self, response: str) -> float:
        tags = self.expected_tags()
        return sum(response.count(tag) == 1 for tag in tags) / len(tags)

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        response = response or ""
        strict = self.strict_ok(response)
        reward = self.tag_credit(response) if self.partial else float(strict)
        status = "correct" if strict else "wrong"
        return Verdict(status, reward, {"strict": strict, "reason": "format ok" if strict else "format broken"})


@register_verifier("format_partial")
@dataclass(frozen=True)
class PartialFormatVerifier(FormatVerifier):
    """`format` with tag-count partial credit on by default."""

    partial: bool = True
