"""The env contract: registry, observation rendering, the grpo.env config, and the built-in retry envs."""
from __future__ import annotations

import copy

import pytest

from rlvr.config import validate
from rlvr.envs import ENVS, Env, MultiTurnConfig, StepResult, list_envs, make_env, register_env, render_observation
from rlvr.envs.retry import RetryEnv
from rlvr.errors import ConfigError
from tasks.registry import get_task

CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def tok():
    from rlvr.models.tiny import build_tiny_tokenizer
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def arith():
    return get_task("arithmetic", digits=1, ops="+", answer_format="plain", n_test=5, n_train=10)


def test_registry_lists_builtins_and_rejects_unknown_and_duplicates():
    assert {"retry", "arithmetic_retry", "code_retry"} <= set(list_envs())
    with pytest.raises(ConfigError, match="unknown environment 'nope'; known: .*retry"):
        make_env("nope", task=None)
    with pytest.raises(ValueError, match="already registered"):
        register_env("retry")(RetryEnv)


def test_make_env_bad_option_is_one_config_line(arith):
    with pytest.raises(ConfigError, match="grpo.env.options: bad options for environment 'retry'.*colour"):
        make_env("retry", task=arith, options={"colour": "red"})
    with pytest.raises(ConfigError, match="arithmetic_retry needs the arithmetic task"):
        make_env("arithmetic_retry", task=get_task("countdown"))


def test_base_step_batch_steps_one_by_one():
    class Counter(Env):
        def reset(self, example):
            self.n = 0
            return str(example)

        def step(self, text):
            self.n += 1
            return StepResult(None, float(len(text)), True, {"n": self.n})

    envs = [Counter(), Counter()]
    for e in envs:
        e.reset(1)
    res = Counter.step_batch(envs, ["ab", "abc"])
    assert [r.reward for r in res] == [2.0, 3.0] and all(r.done for r in res)


def test_render_observation_text_and_plain_messages(tok):
    assert render_observation("\nwrong\n", tok) == "\nwrong\n"
    msgs = [{"role": "user", "content": "again"}, {"role": "user", "content": "now"}]
    assert render_observation(msgs, tok, first=True) == "again\nnow\n"
    assert render_observation(msgs, tok) == "\nagain\nnow\n"
    with pytest.raises(TypeError, match="observation is a str or a list"):
        render_observation(42, tok)


def test_render_observation_with_a_chat_template(tok):
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = CHAT
    first = render_observation([{"role": "user", "content": "2+2?"}], chat_tok, first=True)
    assert first == "<user>2+2?\n<assistant>"
    # A follow-up turn renders as exactly what the template adds after an assistant turn.
    assert render_observation([{"role": "user", "content": "again"}], chat_tok) == "<user>again\n<assistant>"


def test_multiturn_config_validation():
    cfg = validate(MultiTurnConfig, {"name": "arithmetic_retry"})
    assert (cfg.max_turns, cfg.credit, cfg.gamma, cfg.max_tokens) == (3, "outcome", 1.0, 512)
    for bad, key in [({"name": "nope"}, "unknown environment"), ({"name": "retry", "credit": "x"}, "credit"),
                     ({"name": "retry", "gamma": 1.5}, "gamma"), ({"name": "retry", "max_turns": 0}, "max_turns"),
                     ({"name": "retry", "typo": 1}, "unknown key 'typo'")]:
        with pytest.raises(ConfigError, match=key):
            validate(MultiTurnConfig, bad, where="grpo.env")


def test_retry_env_wrong_then_right_gets_the_discounted_reward(arith, tok):
    ex = arith.load("train")[0]
    gold = ex.gold
    env = make_env("arithmetic_retry", task=arith, tokenizer=tok, max_turns=3, options={"turn_discount": 0.5})()
    prompt = env.reset(ex)
    assert prompt == f"{ex.question} ="
    wrong = env.step(str(int(gold) + 1))
    assert (wrong.reward, wrong.done) == (0.0, False)
    assert wrong.observation == f"\nWrong, try again.\n{ex.question} ="
    right = env.step(gold)
    assert right.done and right.reward == pytest.approx(0.5) and right.observation is None
    assert right.info["status"] == "correct" and right.info["turn"] == 1


def test_retry_env_stops_after_max_turns_with_wrong_reward(arith, tok):
    ex = arith.load("train")[1]
    env = RetryEnv(task=arith, tokenizer=tok, max_turns=2, wrong_reward=-0.1)
    env.reset(ex)
    first, last = env.step("no idea"), env.step("still no")
    assert (first.done, last.done) == (False, True)
    assert first.reward == last.reward == pytest.approx(-0.1)
    assert last.info["status"] == "unparseable"


def test_retry_env_batches_one_verifier_call_per_turn(arith, tok, monkeypatch):
    exs = arith.load("train")[:3]
    envs = [RetryEnv(task=arith, tokenizer=tok, max_turns=2) for _ in exs]
    for e, ex in zip(envs, exs):
        e.reset(ex)
    calls = []
    real = arith.score
    monkeypatch.setattr(arith, "score", lambda texts, exs, **kw: calls.append(len(texts)) or real(texts, exs, **kw))
    res = RetryEnv.step_batch(envs, [exs[0].gold, "x", exs[2].gold])
    assert calls == [3]
    assert [r.done for r in res] == [True, False, True] and [r.reward for r in res] == [1.0, 0.0, 1.0]


def test_retry_feedback_is_a_chat_message_with_a_chat_tokenizer_and_shows_the_reason(tok):
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = CHAT
    task = get_task("arithmetic", digits=1, ops="+", answer_format="tags", n_test=5, n_train=10)
    env = make_env("code_retry", task=task, tokenizer=chat_tok, max_turns=2)()

    class FakeScore:          # a code verdict's shape: the failing test's message in info["reason"]
        primary = "code"
        verdicts = {"code": type("V", (), {"info": {"reason": "AssertionError: f(2) == 5"}})()}

    obs = env._feedback(FakeScore())
    assert obs == [{"role": "user", "content": "Tests failed, fix the code.\nAssertionError: f(2) == 5"}]


def test_code_retry_shows_the_failing_test_then_rewards_the_fix(tok):
    from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
    from verifiers.base import get_verifier

    tests = ["assert add(1, 2) == 3", "assert add(10, 5) == 15"]
    ex = Example(id="add", question="Write add(a, b).", meta={"tests": tests})
    task = Task(name="code_toy", loader=lambda s, n: [ex], splits=("train",),
                template=PromptTemplate(plain="{user}\n", chat=False),
                verifiers=[WeightedVerifier(get_verifier("code"), 1.0)])
    env = make_env("code_retry", task=task, tokenizer=tok, max_turns=3)()
    env.reset(ex)
    first = env.step("def add(a, b):\n    return a - b\n")
    if first.info["status"] == "error":
        pytest.skip("the code sandbox cannot run here (see `rlvr sandbox-check`)")
    assert not first.done and first.info["status"] == "wrong"
    assert first.observation.startswith("\nTests failed, fix the code.\ntest 0: AssertionError")
    assert first.observation.endswith("Write add(a, b).\n")
    fixed = env.step("def add(a, b):\n    return a + b\n")
    assert fixed.done and fixed.reward == 1.0
