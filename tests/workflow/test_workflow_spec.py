"""The multi-stage run schema, mixing, selection and routing (fast; no training)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from rlvr.errors import ConfigError
from rlvr.workflow.sources import MixtureTask, mix_by_weight, source_task, tag
from rlvr.workflow.spec import SourceConfig, dependencies, load_workflow, order
from rlvr.workflow.stages import list_stage_kinds
from rlvr.workflow.stages.rejection import RejectionSamplingConfig, select

TINY = Path(__file__).with_name("tiny_run.yaml")
REPO = Path(__file__).parents[2]
R1_FULL = REPO / "recipes" / "r1_mini_full.yaml"


def run_recipes() -> list[Path]:
    """Every YAML under recipes/ that declares `stages:` (a `rlvr run` file), plus the test runs here."""
    import yaml
    found = [p for p in sorted(REPO.glob("recipes/**/*.yaml")) if "stages" in (yaml.safe_load(p.read_text()) or {})]
    return found + sorted(Path(__file__).parent.glob("*.yaml"))


def test_stage_kinds_registered():
    assert {"sft", "grpo", "ppo", "dpo", "rejection_sampling", "rm", "prm", "eval"} <= set(list_stage_kinds())


def test_run_recipes_found():
    names = {p.name for p in run_recipes()}
    assert {"r1_mini_full.yaml", "r1_qwen25_1.5b_full.yaml", "tiny_run.yaml"} <= names


@pytest.mark.parametrize("path", run_recipes(), ids=lambda p: p.stem)
def test_recipes_validate_and_order(path):
    wf = load_workflow(path)
    names = [s.name for s in order(wf)]
    for s in wf.stages:   # every input comes before its consumer
        assert all(names.index(d) < names.index(s.name) for d in dependencies(wf, s))


def test_r1_full_routes_general_prompts_to_the_rm_stage():
    wf = load_workflow(R1_FULL)
    assert wf.sources["general"].reward_model == "rm"
    rl_all = wf.stage("rl_all")
    assert set(dependencies(wf, rl_all)) == {"sft_all", "rm"}
    assert wf.stage("sft_all").model == "base"   # R1 restarts from the base model for the SFT round


def test_overrides_address_stages_by_name():
    wf = load_workflow(TINY, ["stages.cold_start.config.max_steps=7", "stages.rl_all.model=cold_start"])
    assert wf.stage("cold_start").config["max_steps"] == 7
    assert wf.stage("rl_all").model == "cold_start"


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


BASE = """
sources: {a: {task: arithmetic, options: {digits: 1}}}
stages:
"""


@pytest.mark.parametrize("stages, needle", [
    ("  - {name: s, kind: sft, data: [{source: a}], config: {max_stepz: 3}}", "stages.s.config: unknown key 'max_stepz'"),
    ("  - {name: s, kind: sfx, data: [{source: a}]}", "unknown stage kind 'sfx'"),
    ("  - {name: s, kind: sft, data: [{source: b}]}", "unknown source 'b'"),
    ("  - {name: s, kind: sft, model: cold_strat, data: [{source: a}]}", "stages.s.model: 'cold_strat'"),
    ("  - {name: s, kind: sft, data: [{source: a, stage: s}]}", "exactly one of source / stage / file"),
    ("  - {name: s, kind: grpo}", "needs `prompts`"),
    ("  - {name: s, kind: sft, data: [{source: a}]}\n  - {name: s, kind: sft, data: [{source: a}]}", "duplicate"),
    ("  - {name: x, kind: sft, model: y, data: [{source: a}]}\n  - {name: y, kind: sft, model: x, data: [{source: a}]}",
     "cycle"),
])
def test_bad_runs_are_one_line_errors(tmp_path, stages, needle):
    with pytest.raises(ConfigError) as e:
        load_workflow(_write(tmp_path, BASE + stages + "\n"))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_reward_model_source_must_name_an_rm_stage(tmp_path):
    text = """
sources:
  a: {task: arithmetic, options: {digits: 1}, reward_model: s}
stages:
  - {name: s, kind: sft, data: [{source: a}]}
"""
    with pytest.raises(ConfigError, match="not a kind rm stage"):
        load_workflow(_write(tmp_path, text))


def test_mix_by_weight_hand_computed():
    a, b = [f"a{i}" for i in range(10)], [f"b{i}" for i in range(4)]
    # shares 1/2, 1/2: N = min(10 / .5, 4 / .5) = 8 -> 4 + 4
    mixed = mix_by_weight([a, b], [1.0, 1.0], seed=0)
    assert sum(x.startswith("a") for x in mixed) == 4 and sum(x.startswith("b") for x in mixed) == 4
    # shares 3/4, 1/4: N = min(10 / .75, 4 / .25) = 13.33 -> round(10.0) = 10 of a, round(3.33) = 3 of b
    mixed = mix_by_weight([a, b], [3.0, 1.0], seed=0)
    assert sum(x.startswith("a") for x in mixed) == 10 and sum(x.startswith("b") for x in mixed) == 3
    assert mix_by_weight([a, b], [None, None], seed=0) == a + b        # no weights: concatenation
    with pytest.raises(ValueError):
        mix_by_weight([a, b], [1.0, None], seed=0)


def _s(k, text, passed, n):
    return {"sample": k, "completion": text, "passed": passed, "num_tokens": n}


def test_rejection_select_dedupes_and_keeps_the_shortest():
    samples = [_s(0, "<answer>12</answer>", True, 19), _s(1, "<answer>12</answer> ", True, 20),
               _s(2, "bad", False, 3), _s(3, "<answer> 12</answer>", True, 20), _s(4, "<answer>12</answer>!!", True, 21)]
    cfg = RejectionSamplingConfig(keep_per_prompt=None)
    kept = select(samples, cfg, random.Random(0))
    # sample 1 is sample 0 up to whitespace; sample 3 differs inside the text, so it stays
    assert [s["sample"] for s in kept] == [0, 3, 4]
    kept = select(samples, cfg.model_copy(update={"keep_per_prompt": 2}), random.Random(0))
    assert [s["sample"] for s in kept] == [0, 3]                 # shortest two, ties by sample index
    assert select(samples, cfg.model_copy(update={"dedupe": False}), random.Random(0))[1]["sample"] == 1


def test_mixture_routes_each_example_to_its_sources_verifiers():
    plain = source_task(SourceConfig(task="arithmetic", options={"digits": 1, "answer_format": "plain", "n_test": 15}))
    fmt = source_task(SourceConfig(task="arithmetic", options={"digits": 1, "answer_format": "plain", "n_test": 15},
                                   extra_verifiers=[{"name": "format", "weight": 0.5, "options": {"think_tag": None}}]))
    ex_p = tag(plain.load("train")[:1], "p")
    ex_f = tag(fmt.load("train")[:1], "f")
    mix = MixtureTask({"p": plain, "f": fmt})
    gold_p, gold_f = ex_p[0].gold, ex_f[0].gold
    scores = mix.score([f"<answer>{gold_f}</answer>", f"<answer>{gold_p}</answer>"], [ex_f[0], ex_p[0]])
    assert set(scores[0].verdicts) == {"integer", "format"} and scores[0].reward == pytest.approx(1.5)
    assert set(scores[1].verdicts) == {"integer"} and scores[1].reward == pytest.approx(1.0)
    assert ex_p[0].id.startswith("p/") and mix.render(ex_p[0]) == plain.render(ex_p[0])


@pytest.mark.parametrize("path", run_recipes(), ids=lambda p: p.stem)
def test_recipe_sources_resolve(path):
    """Each source's task builds with its options and has the split named (RM routing is not started here)."""
    wf = load_workflow(path)
    for name, src in wf.sources.items():
        task = source_task(src)
        assert src.split in task.splits, f"{path.name}: sources.{name}: no split {src.split!r}"


def test_gpu_r1_recipe_validates_for_the_other_qwen_size():
    wf = load_workflow(REPO / "recipes/gpu/r1_qwen25_1.5b_full.yaml", ["model.path=Qwen/Qwen2.5-0.5B",
                                                                        "name=r1_qwen25_0.5b_full"])
    assert wf.model.path == "Qwen/Qwen2.5-0.5B" and wf.out_dir == "runs/r1_qwen25_0.5b_full"


def test_fingerprints_ignore_defaults_but_not_changes():
    """Adding a config field with a default (a new release) must not invalidate finished stages; setting it must."""
    from rlvr.workflow.runner import WorkflowRunner

    def fp(*overrides):
        wf = load_workflow(TINY, ["output_dir=/tmp/rlvr-fp-test", *overrides])
        return WorkflowRunner(wf, log=lambda m: None).fingerprint(wf.stage("cold_start"), 0)

    base = fp()
    assert fp("rollout.bf16=true") == base                 # the default, written out
    assert fp("rollout.bf16=false") != base
    assert fp("stages.cold_start.config.lr=0.002") != base
    assert fp("stages.rl_all.config.steps=9") == base       # a downstream stage's change
