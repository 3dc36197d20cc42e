"""`retry`: the task's own verifiers judge each answer; a wrong one gets "Wrong, try again." and another turn.

    grpo.env: {name: retry, max_turns: 3, options: {feedback: "Wrong, try again.", turn_discount: 1.0,
                                                   wrong_reward: 0.0, show_reason: false}}

Rewards (turn t counted from 0): the first correct answer ends the dialogue with
    r_t = turn_discount^t · reward(answer)        (the task's weighted verifier reward)
and every wrong turn gets r_t = wrong_reward, so the outcome Σ_t r_t = turn_discount^t · reward when solved on
turn t (with wrong_reward 0). The dialogue also ends after `max_turns` answers.

Feedback: with a chat tokenizer (and a chat task template) a user message `feedback`; otherwise plain text
"\\n{feedback}\\n{first prompt}" so a completion-style model sees the question again. `show_reason` appends the
primary verdict's `reason` (for code: the failing test's error), which makes `code_retry` a test-feedback loop.

Registered names: `retry` (any verifiable task), `arithmetic_retry` (the same, for the built-in arithmetic
task: it checks that the task is arithmetic), `code_retry` (show_reason on, feedback "Tests failed, fix the code.").
"""
from __future__ import annotations

from typing import Any, Sequence

from rlvr.envs.base import Env, Observation, StepResult, register_env

__all__ = ["RetryEnv", "ArithmeticRetryEnv", "CodeRetryEnv"]


@register_env("retry")
class RetryEnv(Env):
    def __init__(self, *, task: Any, tokenizer: Any = None, max_turns: int = 1, feedback: str = "Wrong, try again.",
                 turn_discount: float = 1.0, wrong_reward: float = 0.0, show_reason: bool = False,
                 verify_timeout: float = 5.0):
        super().__init__(task=task, tokenizer=tokenizer, max_turns=max_turns)
        if task is None:
            raise TypeError("the retry env needs the recipe's task")
        if not 0.0 <= turn_discount <= 1.0:
            raise TypeError(f"turn_discount must be in [0, 1], got {turn_discount}")
        self.feedback, self.turn_discount, self.wrong_reward = feedback, turn_discount, wrong_reward
        self.show_reason, self.verify_timeout = show_reason, verify_timeout
        self.example, self.prompt, self.turn = None, "", 0

    def reset(self, example: Any) -> Observation:
        self.example, self.turn = example, 0
        self.prompt = self.task.render(example, self.tokenizer)
        return self.prompt

    def step(self, text: str) -> StepResult:
        return self.step_batch([self], [text])[0]

    @classmethod
    def step_batch(cls, envs: Sequence["RetryEnv"], texts: Sequence[str]) -> list[StepResult]:
        """One verifier-pool call for the whole turn."""
        if not envs:
            return []
        first = envs[0]
        scores = first.task.score(list(texts), [e.example for e in envs], timeout=first.verify_timeout)
        return [env._after(score) for env, score in zip(envs, scores)]

    def _after(self, score: Any) -> StepResult:
        t = self.turn
        self.turn += 1
        info = {"turn": t, "status": score.status, "reward": score.reward}
        if score.correct:
            return StepResult(None, self.turn_discount ** t * score.reward, True, info)
        if self.turn >= self.max_turns:
            return StepResult(None, self.wrong_reward, True, info)
        return StepResult(self._feedback(score), self.wrong_reward, False, info)

    def _feedback(self, score: Any) -> Observation:
        text = self.feedback
        reason = score.verdicts[score.primary].info.get("reason") if self.show_reason else None
        if reason:
            text = f"{text}\n{reason}"
        chat = self.task.template.chat and bool(getattr(self.tokenizer, "chat_template", None))
        if chat:
            return [{"role": "user", "content": text}]
        return f"\n{text}\n{self.prompt}"


@register_env("arithmetic_retry")
class ArithmeticRetryEnv(RetryEnv):
    def __init__(self, *, task: Any, **kwargs: Any):
        if task is not None and getattr(task, "name", None) != "arithmetic":
            raise TypeError(f"arithmetic_retry needs the arithmetic task, got {getattr(task, 'name', task)!r} "
                            "(use the generic `retry` env)")
        super().__init__(task=task, **kwargs)


@register_env("code_retry")
class CodeRetryEnv(RetryEnv):
    def __init__(self, *, task: Any, feedback: str = "Tests failed, fix the code.", show_reason: bool = True,
                 **kwargs: Any):
        super().__init__(task=task, feedback=feedback, show_reason=show_reason, **kwargs)
