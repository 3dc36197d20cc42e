"""GRPO trainer pieces without a real model: dynamic-sampling refill, overlong handling, prompt stream."""
from __future__ import annotations

import pytest
import torch

from rlvr.rollout import Rollout
from rlvr.trainers.grpo import GRPOConfig, PromptStream, collect_batch, soft_overlong_penalty
from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from verifiers.base import get_verifier


class ScriptedEngine:
    """Answers prompt i with the scripted list of G texts; every text is 2 'tokens' long."""

    tokenizer = None

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.calls = script, []

    def generate(self, prompts, params):
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            texts = self.script[p]
            assert len(texts) == params.n
            out.append([Rollout(prompt_ids=[5, 6], completion_ids=[7, 8] if t != "LONG" else [7] * params.max_new_tokens,
                                text=t, logprobs=[-0.5] * (2 if t != "LONG" else params.max_new_tokens),
                                finish_reason="length" if t == "LONG" else "stop") for t in texts])
        return out


class Tok:
    pad_token_id = 0


def make_task(n: int) -> tuple[Task, list[Example]]:
    exs = [Example(id=str(i), question=f"q{i}", gold=str(i)) for i in range(n)]
    task = Task(name="scripted", loader=lambda split, limit: exs, template=PromptTemplate(plain="{user}", chat=False),
                verifiers=[WeightedVerifier(get_verifier("integer"), 1.0)], splits=("train",))
    return task, exs


def _fixed_order(stream, order):
    def take(k):
        out = order[stream.cursor:stream.cursor + k]
        stream.cursor += k
        return out
    return take


SCRIPT = {"q0": ["0", "0"],   # all correct -> no spread
          "q1": ["9", "9"],   # all wrong -> no spread
          "q2": ["2", "7"],   # spread
          "q3": ["1", "1"],   # all wrong
          "q4": ["4", "0"],   # spread
          "q5": ["3", "5"]}


def test_dynamic_sampling_drops_zero_spread_groups_and_refills():
    task, exs = make_task(6)
    engine = ScriptedEngine(SCRIPT)
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_sampling_rounds=5, max_new_tokens=4)
    stream = PromptStream(6, seed=0)
    stream.take = _fixed_order(stream, list(range(6)))
    batch = collect_batch(engine, task, exs, stream, cfg, Tok())
    # round 1: q0 q1 both dropped; round 2: q2 kept, q3 dropped; round 3 asks only for the 1 missing group: q4.
    assert engine.calls == [["q0", "q1"], ["q2", "q3"], ["q4"]]
    assert batch.metrics["sampling/kept_groups"] == 2
    assert batch.metrics["sampling/dropped_groups"] == 3
    assert batch.metrics["sampling/groups"] == 5
    assert batch.rewards.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    assert stream.cursor == 5
    # reward metrics cover every sampled completion, kept or not: 4 correct of 10
    assert batch.metrics["reward/mean"] == pytest.approx(0.4)
    assert batch.metrics["outcome/correct"] == pytest.approx(0.4)


def test_dynamic_sampling_is_bounded():
    task, exs = make_task(6)
    engine = ScriptedEngine({k: ["0", "0"] if k != "q5" else ["5", "5"] for k in SCRIPT})
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_sampling_rounds=2, max_new_tokens=4)
    batch = collect_batch(engine, task, exs, PromptStream(6, seed=0), cfg, Tok())
    assert len(engine.calls) == 2
    assert batch.packed is None and batch.metrics["sampling/kept_groups"] == 0
    assert batch.metrics["sampling/dropped_groups"] == 4


def test_without_dynamic_sampling_everything_is_kept():
    task, exs = make_task(6)
    engine = ScriptedEngine(SCRIPT)
    cfg = GRPOConfig(prompts_per_step=3, group_size=2, dynamic_sampling=False, max_new_tokens=4)
    stream = PromptStream(6, seed=0)
    stream.take = _fixed_order(stream, list(range(6)))
    batch = collect_batch(engine, task, exs, stream, cfg, Tok())
    assert len(engine.calls) == 1 and len(batch.packed) == 6
    assert batch.metrics["sampling/dropped_groups"] == 0


def test_overlong_mask_and_penalty():
    task, exs = make_task(2)
    engine = ScriptedEngine({"q0": ["0", "LONG"], "q1": ["1", "LONG"]})
    stream = PromptStream(2, seed=0)
    stream.take = _fixed_order(stream, [0, 1])
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, overlong="mask", max_new_tokens=6, dynamic_sampling=False)
    b = collect_batch(engine, task, exs, stream, cfg, Tok())
    assert b.packed.completion_mask.sum(-1).tolist() == [2, 0, 2, 0]      # truncated rows leave the loss
    stream2 = PromptStream(2, seed=0)
    stream2.take = _fixed_order(stream2, [0, 1])
    cfg2 = cfg.model_copy(update={"overlong": "penalty", "overlong_buffer": 4})
    b2 = collect_batch(engine, task, exs, stream2, cfg2, Tok())
    # "LONG" is 6 tokens = L_max: penalty ((6-4) - 6)/4 = -1; it is also wrong (reward 0)
    assert b2.rewards.tolist() == [1.0, -1.0, 1.0, -1.0]


@pytest.mark.parametrize("length,expected", [(10, 0.0), (12, 0.0), (13, -0.25), (14, -0.5), (16, -1.0), (20, -1.0)])
def test_soft_overlong_penalty_hand_values(length, expected):
    # L_max = 16, buffer 4: free up to 12, then -(L-12)/4
    assert soft_overlong_penalty(length, 16, 4) == pytest.approx(expected)


def test_prompt_stream_is_a_function_of_seed_and_cursor():
    a = PromptStream(7, seed=3)
    first = a.take(10)
    b = PromptStream(7, seed=3, cursor=4)
    assert b.take(6) == first[4:]
    assert sorted(first[:7]) == list(range(7))          # each epoch is a permutation
    assert PromptStream(7, seed=4).take(7) != first[:7]


def counting_trainable(model, opt):
    """A PlainTrainable that records when `gathered()` is entered relative to the backward passes and steps."""
    import contextlib

    from rlvr.distributed.trainable import PlainTrainable

    class Counting(PlainTrainable):
        def gathered(self):
            self.events.append("gather")
            return contextlib.nullcontext()

        def backward(self, loss):
            self.events.append("backward")
            super().backward(loss)

        def step(self):
            self.events.append("step")
            return super().step()

    tr = Counting(model, opt, None)
    tr.events = []
    return tr


@pytest.mark.parametrize("minibatches", [1, 2])
@pytest.mark.parametrize("beta,kl_mode", [(0.0, "loss"), (0.1, "loss"), (0.1, "reward")])
def test_idle_update_enters_gathered_like_policy_update(beta, kl_mode, minibatches):
    """ZeRO-3: entering `gathered()` is a collective. A rank with no groups (`idle_update`) must gather as often
    as policy_update does, and before its backward passes, as policy_update does."""
    from rlvr.distributed import reference_model
    from rlvr.trainers.common import build_optimizer, load_model_and_tokenizer, pack
    from rlvr.trainers.grpo import Batch, idle_update, policy_update

    model, tok = load_model_and_tokenizer("tiny")
    cfg = GRPOConfig(mu=1, micro_batch=2, beta=beta, kl_mode=kl_mode, bf16=False, group_size=2,
                     minibatches=minibatches)
    ref = reference_model(model) if beta > 0 else None
    packed = pack([[5, 6], [5, 6]], [[7, 8, 9], [10]], tok.pad_token_id)
    batch = Batch(packed, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.zeros(2, 3), {})
    busy = counting_trainable(model, build_optimizer(model, 1e-3))
    policy_update(model, ref, busy, batch, cfg)
    idle = counting_trainable(model, build_optimizer(model, 1e-3))
    idle_update(idle, cfg, has_ref=ref is not None)
    # reference scoring (beta > 0), then the behaviour policy's no-grad pass (KL in the reward, or minibatches > 1)
    n = (beta > 0) + (minibatches > 1 or kl_mode == "reward" and beta > 0)
    assert busy.events[:n] == idle.events[:n] == ["gather"] * n
    assert "gather" not in busy.events[n:] + idle.events[n:]


def test_entropy_bonus_is_minus_coef_times_token_mean_entropy():
    """With equal rewards every advantage is 0, so the whole loss is the bonus: −coef·mean_t H_t, and one step
    along it raises the policy's entropy on those tokens (coef 0: the loss is exactly 0)."""
    from rlvr.distributed.trainable import PlainTrainable
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack
    from rlvr.trainers.grpo import Batch, policy_update

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny")
    packed = pack([[5, 6], [5, 6]], [[7, 8, 9], [10]], tok.pad_token_id)
    batch = Batch(packed, torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), torch.zeros(2, 3), {})

    def mean_entropy():
        with torch.no_grad():
            _, ent = completion_logprobs(model, packed, with_entropy=True)
        mask = packed.completion_mask.to(ent.device)
        return float((ent * mask).sum() / mask.sum())

    for coef in (0.0, 0.5):
        h0 = mean_entropy()
        cfg = GRPOConfig(mu=1, micro_batch=2, bf16=False, group_size=2, entropy_coef=coef)
        sgd = torch.optim.SGD(model.parameters(), lr=0.1)   # a plain gradient step: first order is what counts
        m = policy_update(model, None, PlainTrainable(model, sgd, None), batch, cfg)
        assert m["policy/entropy"] == pytest.approx(h0, rel=1e-5)
        assert m["loss/total"] == pytest.approx(-coef * h0, rel=1e-5, abs=1e-7)
    assert mean_entropy() > h0 + 1e-3


def test_oversampling_fills_the_batch_in_fewer_rounds_and_trims_the_surplus():
    task, exs = make_task(6)
    engine = ScriptedEngine(SCRIPT)
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_sampling_rounds=5, max_new_tokens=4, oversample=2.0)
    stream = PromptStream(6, seed=0)
    stream.take = _fixed_order(stream, list(range(6)))
    batch = collect_batch(engine, task, exs, stream, cfg, Tok())
    # round 1 draws ceil(2 x 2) = 4 prompts: q2 kept; round 2 draws ceil(2 x 1) = 2: q4 and q5 kept, q5 trimmed.
    assert engine.calls == [["q0", "q1", "q2", "q3"], ["q4", "q5"]]
    m = batch.metrics
    assert (m["sampling/kept_groups"], m["sampling/surplus_groups"], m["sampling/dropped_groups"]) == (2, 1, 3)
    assert batch.group_ids.tolist() == [0, 0, 1, 1] and batch.rewards.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert stream.cursor == 6


def test_oversample_below_one_is_a_config_error():
    with pytest.raises(ValueError, match="oversample"):
        GRPOConfig(oversample=0.5)


def test_every_registered_policy_loss_trains_and_agrees_on_policy():
    """Through policy_update: on-policy (mu = 1) every ratio is 1, so ppo_clip, gspo and cispo take the same
    step; with mu = 2 the second pass is off-policy and they part ways. Each reports its loss metrics."""
    import copy

    from rlvr.algos import list_policy_losses
    from rlvr.distributed.trainable import PlainTrainable
    from rlvr.trainers.common import load_model_and_tokenizer, pack
    from rlvr.trainers.grpo import Batch, policy_update

    torch.manual_seed(0)
    base, tok = load_model_and_tokenizer("tiny", device="cpu")
    packed = pack([[5, 6], [5, 6], [7, 8], [7, 8]], [[7, 8, 9], [10], [11, 12], [13]], tok.pad_token_id)
    batch = Batch(packed, torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]), torch.zeros(4, 3), {})
    names = ["ppo_clip", "gspo", "cispo"]
    assert set(names) <= set(list_policy_losses())
    clip = {"ppo_clip": (0.2, 0.28), "gspo": (3e-4, 4e-4), "cispo": (1.0, 4.0)}
    after: dict[tuple[str, int], list[torch.Tensor]] = {}
    for mu in (1, 2):
        for name in names:
            model = copy.deepcopy(base)
            cfg = GRPOConfig(mu=mu, micro_batch=4, bf16=False, group_size=2, policy_loss=name,
                             clip_low=clip[name][0], clip_high=clip[name][1], loss_agg="seq_mean_token_mean")
            m = policy_update(model, None, PlainTrainable(model, torch.optim.SGD(model.parameters(), lr=0.5), None),
                              batch, cfg)
            assert all(torch.isfinite(torch.tensor(v)) for v in m.values() if isinstance(v, float))
            assert "loss/clipfrac" in m and "loss/ratio_mean" in m
            after[name, mu] = [p.detach().clone() for p in model.parameters()]
    moved = max((a - b).abs().max().item() for a, b in zip(after["ppo_clip", 1], base.parameters()))
    assert moved > 1e-4
    for name in ("gspo", "cispo"):
        assert max((a - b).abs().max().item() for a, b in zip(after[name, 1], after["ppo_clip", 1])) < 1e-6
        assert max((a - b).abs().max().item() for a, b in zip(after[name, 2], after["ppo_clip", 2])) > 1e-6


def test_top_entropy_quantile_trains_on_the_high_entropy_tokens_only():
    """ρ = 0.5: about half the tokens carry the policy loss (reported), the step differs from ρ = 1, and it equals
    ρ = 1 on a batch whose low-entropy tokens were dropped from the loss by hand (advantage 0 there)."""
    import copy

    from rlvr.algos import high_entropy_mask
    from rlvr.distributed.trainable import PlainTrainable
    from rlvr.errors import ConfigError
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack
    from rlvr.trainers.grpo import Batch, policy_update

    torch.manual_seed(0)
    base, tok = load_model_and_tokenizer("tiny", device="cpu")
    packed = pack([[5, 6], [5, 6], [7, 8], [7, 8]], [[7, 8, 9, 10], [10, 11], [11, 12, 13], [13, 14]],
                  tok.pad_token_id)
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])

    def step(rho, advantages=None):
        model = copy.deepcopy(base)
        cfg = GRPOConfig(mu=1, micro_batch=4, bf16=False, group_size=2, top_entropy_quantile=rho)
        batch = Batch(packed, rewards, groups, torch.zeros(4, 4), {}, advantages)
        m = policy_update(model, None, PlainTrainable(model, torch.optim.SGD(model.parameters(), lr=0.5), None),
                          batch, cfg)
        return m, [p.detach() for p in model.parameters()]

    m_half, w_half = step(0.5)
    m_all, w_all = step(1.0)
    assert 0.4 <= m_half["loss/entropy_kept_frac"] <= 0.6 and "loss/entropy_kept_frac" not in m_all
    assert max((a - b).abs().max().item() for a, b in zip(w_half, w_all)) > 1e-6
    # by hand: token-level advantages zeroed where the mask drops the token, then an all-token step
    with torch.no_grad():
        _, ent = completion_logprobs(base, packed, with_entropy=True)
    keep = high_entropy_mask(ent, packed.completion_mask, 0.5)
    from rlvr.algos import get_advantage
    adv, stats = get_advantage("grpo")(rewards, groups)
    hand = lambda r, g, **kw: (adv[:, None] * keep, stats)       # noqa: E731 (a fixed advantage function)
    _, w_hand = step(1.0, hand)
    assert max((a - b).abs().max().item() for a, b in zip(w_half, w_hand)) < 1e-6
    with pytest.raises((ConfigError, ValueError)):
        GRPOConfig(top_entropy_quantile=0.0)


def test_minibatch_parts():
    from rlvr.distributed.context import even_slices as minibatch_parts   # GRPO's minibatch split

    assert minibatch_parts(10, 3) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert minibatch_parts(2, 3) == [slice(0, 1), slice(1, 2), slice(2, 2)]
    assert minibatch_parts(5, 1) == [slice(0, 5)]


def test_minibatches_are_separate_steps_against_the_behaviour_policy():
    """minibatches = 2: two optimizer steps per pass, each normalised over its own half, and the second half's
    ratio is taken against log-probs from *before* the first step. Checked against the same steps by hand."""
    import copy

    from rlvr.algos import aggregate_loss, clipped_policy_loss, get_advantage
    from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack
    from rlvr.trainers.grpo import Batch, policy_update

    torch.manual_seed(0)
    base, tok = load_model_and_tokenizer("tiny", device="cpu")
    packed = pack([[5, 6]] * 2 + [[7, 8]] * 2, [[7, 8, 9, 10], [10, 11], [11, 12, 13], [13]], tok.pad_token_id)
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])
    cfg = GRPOConfig(mu=1, minibatches=2, micro_batch=1, bf16=False, group_size=2, max_new_tokens=4)
    model = copy.deepcopy(base)
    tr = counting_trainable(model, torch.optim.SGD(model.parameters(), lr=0.5))
    m = policy_update(model, None, tr, Batch(packed, rewards, groups, torch.zeros(4, 4), {}), cfg)
    assert tr.events.count("step") == 2 and tr.events.count("backward") == 4
    assert m["loss/ratio_max"] > 1.0 + 1e-6 or m["loss/ratio_mean"] != pytest.approx(1.0, abs=1e-7)

    hand = copy.deepcopy(base)
    opt = torch.optim.SGD(hand.parameters(), lr=0.5)
    with torch.no_grad():
        old, _ = completion_logprobs(hand, packed)
    adv, _ = get_advantage("grpo")(rewards, groups)
    for part in (slice(0, 2), slice(2, 4)):
        sub = packed.select(part)
        logp, _ = completion_logprobs(hand, sub)
        loss_mat, _ = clipped_policy_loss(logp, old[part], adv[part], sub.completion_mask, 0.2, 0.28)
        aggregate_loss(loss_mat, sub.completion_mask, "token_mean", 4,
                       num_tokens_total=int(sub.completion_mask.sum()), num_seqs_total=2).backward()
        opt.step()
        opt.zero_grad()
    assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), hand.parameters())) < 1e-6
    assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), base.parameters())) > 1e-4
