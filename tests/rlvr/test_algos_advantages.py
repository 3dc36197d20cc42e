"""Advantage estimators: vectorised versions vs plain-Python loops, hand-computed values, and the registry."""
import math

import pytest
import torch

from rlvr.algos import get_advantage, list_advantages, register_advantage, UnknownAlgorithmError
from rlvr.errors import ConfigError


# ---- plain-Python reference implementations ------------------------------------------------------------
def _groups(ids):
    out = {}
    for i, g in enumerate(ids):
        out.setdefault(g, []).append(i)
    return out


def _mean(xs):
    return sum(xs) / len(xs)


def _std_unbiased(xs):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def loop_grpo(r, ids, scale_by_std=True, eps=1e-6):
    adv = [0.0] * len(r)
    for members in _groups(ids).values():
        if len(members) < 2:
            continue
        vals = [r[i] for i in members]
        m, s = _mean(vals), _std_unbiased(vals)
        for i in members:
            adv[i] = (r[i] - m) / (s + eps) if scale_by_std else r[i] - m
    return adv


def loop_rloo(r, ids):
    adv = [0.0] * len(r)
    for members in _groups(ids).values():
        if len(members) < 2:
            continue
        for i in members:
            others = [r[j] for j in members if j != i]
            adv[i] = r[i] - _mean(others)
    return adv


def loop_reinforce_pp(r, ids, eps=1e-8):
    centred = [0.0] * len(r)
    groups = _groups(ids)
    for members in groups.values():
        if len(members) < 2:
            continue
        m = _mean([r[i] for i in members])
        for i in members:
            centred[i] = r[i] - m
    bm, bs = _mean(centred), _std_unbiased(centred)
    single = {i for ms in groups.values() if len(ms) == 1 for i in ms}
    return [0.0 if i in single else (c - bm) / (bs + eps) for i, c in enumerate(centred)]


LOOPS = {
    "grpo": loop_grpo,
    "dr_grpo": lambda r, ids: loop_grpo(r, ids, scale_by_std=False),
    "rloo": loop_rloo,
    "reinforce_pp": loop_reinforce_pp,
}


def _random_batch(seed):
    g = torch.Generator().manual_seed(seed)
    n_groups = int(torch.randint(2, 6, (1,), generator=g))
    sizes = torch.randint(1, 6, (n_groups,), generator=g).tolist()
    ids = torch.cat([torch.full((s,), 100 + 7 * k) for k, s in enumerate(sizes)])  # sparse, non-contiguous ids
    perm = torch.randperm(len(ids), generator=g)  # groups interleaved in any order
    ids = ids[perm]
    rewards = torch.randn(len(ids), generator=g, dtype=torch.float64)
    if seed % 3 == 0:  # binary rewards: produces zero-std groups
        rewards = (rewards > 0).double()
    return rewards, ids


@pytest.mark.parametrize("name", sorted(LOOPS))
@pytest.mark.parametrize("seed", range(12))
def test_vectorised_matches_loop(name, seed):
    rewards, ids = _random_batch(seed)
    adv, metrics = get_advantage(name)(rewards, ids)
    expected = LOOPS[name](rewards.tolist(), ids.tolist())
    assert adv.shape == rewards.shape
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-9)
    assert set(metrics) >= {"advantage/mean", "advantage/std", "advantage/zero_std_frac"}


def test_grpo_hand_computed():
    # group 5: [1, 0, 1] -> mean 2/3, unbiased std sqrt(((1/3)^2*2 + (2/3)^2)/2) = sqrt(1/3)
    # group 2: [0.5] (singleton -> 0); group 9: [2, 2] (zero std -> 0)
    rewards = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0, 2.0], dtype=torch.float64)
    ids = torch.tensor([5, 2, 5, 9, 5, 9])
    s = math.sqrt(1 / 3)
    expected = [(1 / 3) / (s + 1e-6), 0.0, (-2 / 3) / (s + 1e-6), 0.0, (1 / 3) / (s + 1e-6), 0.0]
    adv, metrics = get_advantage("grpo")(rewards, ids)
    assert adv.tolist() == pytest.approx(expected, abs=1e-12)
    assert float(metrics["advantage/zero_std_frac"]) == pytest.approx(2 / 6)
    assert float(metrics["advantage/singleton_frac"]) == pytest.approx(1 / 6)
    adv_noscale, _ = get_advantage("grpo")(rewards, ids, scale_by_std=False)
    assert adv_noscale.tolist() == pytest.approx([1 / 3, 0, -2 / 3, 0, 1 / 3, 0], abs=1e-12)


def test_dr_grpo_and_rloo_hand_computed():
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 1])
    dr, _ = get_advantage("dr_grpo")(rewards, ids)
    assert dr.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])
    rloo, _ = get_advantage("rloo")(rewards, ids)
    # r_i - mean(others): 3 - 1.5, 1 - 2.5, 2 - 2
    assert rloo.tolist() == pytest.approx([1.5, -1.5, 0.0, 0.0])


def test_reinforce_pp_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 4.0, 0.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1])
    # centred: [0.5, -0.5, 2, -2]; batch mean 0; unbiased std sqrt((0.25+0.25+4+4)/3)
    s = math.sqrt(8.5 / 3)
    adv, _ = get_advantage("reinforce_pp")(rewards, ids)
    assert adv.tolist() == pytest.approx([0.5 / s, -0.5 / s, 2 / s, -2 / s], rel=1e-7)


def test_integer_rewards_and_single_group_of_one():
    adv, _ = get_advantage("grpo")(torch.tensor([1, 0, 1]), torch.tensor([0, 0, 0]))
    assert adv.dtype == torch.float32 and adv[1] < 0 < adv[0]
    for name in list_advantages():
        adv, _ = get_advantage(name)(torch.tensor([3.0]), torch.tensor([0]))
        assert adv.tolist() == [0.0]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="batch"):
        get_advantage("grpo")(torch.zeros(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        get_advantage("grpo")(torch.zeros(3), torch.zeros(3))


def test_registry_miss_lists_names_and_duplicate_raises():
    with pytest.raises(UnknownAlgorithmError) as e:
        get_advantage("gpro")
    assert isinstance(e.value, ConfigError) and isinstance(e.value, KeyError)
    msg = str(e.value)
    assert "'gpro'" in msg and all(n in msg for n in ("grpo", "dr_grpo", "rloo", "reinforce_pp"))
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda r, g: (r, {}))


def test_process_advantages_hand_computed():
    """DeepSeekMath process supervision: z-score every step reward of a group, then suffix-sum per token."""
    from rlvr.algos import process_advantages

    # group 0: seq 0 has steps ending at t=1 (r=1.0) and t=3 (r=0.0); seq 1 one step at t=2 (r=0.5).
    # R_0 = [1, 0, 0.5]: mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5 -> r~ = [1, -1, 0]
    # group 1: seq 2 has a single step (std undefined -> 0 advantage everywhere)
    r = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0], [0.0, 0.9, 0.0, 0.0]])
    m = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    adv, metrics = process_advantages(r, m, torch.tensor([0, 0, 1]), eps=0.0)
    expected = torch.tensor([[0.0, 0.0, -1.0, -1.0],     # t<=1: 1 + (-1); t in 2..3: -1
                             [0.0, 0.0, 0.0, 0.0],       # its one step normalises to 0
                             [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(adv, expected)
    assert float(metrics["process/steps_per_seq"]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError):
        process_advantages(r, m[:, :3], torch.tensor([0, 0, 1]))


def test_grpo_batch_std_scope_by_hand():
    """Group mean, batch std: rewards [1, 0, 0, 0 | 1, 1, 0, 1 | 5 (singleton)]."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 5.0])
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])
    adv, _ = get_advantage("grpo")(rewards, ids, std_scope="batch", eps=0.0)
    # group means 0.25 and 0.75; the 8 pooled rewards (the singleton excluded) have mean 0.5 and unbiased
    # variance 8 * 0.25 / 7 = 2/7
    s = (2 / 7) ** 0.5
    expect = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25, 0.0]) / torch.tensor(
        [s] * 8 + [1.0])
    expect[-1] = 0.0
    assert torch.allclose(adv, expect, atol=1e-6)
    # group scope divides each group by its own std instead (both groups: sqrt(0.25) = 0.5)
    grp, _ = get_advantage("grpo")(rewards, ids, eps=0.0)
    assert torch.allclose(grp[:8], torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25]) / 0.5,
                          atol=1e-6)
    with pytest.raises(ValueError, match="std_scope"):
        get_advantage("grpo")(rewards, ids, std_scope="global")
