"""The multi-stage run schema (`rlvr run RUN.yaml`): named data sources + a list of stages forming a DAG.

    name: r1_mini_full
    model: {path: tiny}                    # what `model: base` means
    sources:                               # task + split + slice (+ reward routing), used by name
      add: {task: arithmetic, options: {digits: 2}, split: train, take: [0, 2000]}
    stages:
      - {name: cold_start, kind: sft, model: base, data: [{source: add, target: "{gold}"}], config: {...}}
      - {name: rl, kind: grpo, model: cold_start, prompts: [{source: add}], config: {...}}
    eval: {source: add_test, n: 8, ks: [1, 8]}  # run after every model-producing stage

A stage's inputs are other stages' outputs (`model: <stage>`, `data: [{stage: <stage>}]`) or sources/files;
the runner orders stages by these edges. `config` is validated by the stage kind's own config class
(`rlvr.workflow.stages`), so a typo in a stage's config is one error line naming `stages.<name>.config.<key>`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pydantic import field_validator, model_validator

from rlvr.config import Config, apply_overrides, read_yaml, validate
from rlvr.distributed.config import LoRAConfig
from rlvr.envs.config import MultiTurnConfig
from rlvr.errors import ConfigError
from rlvr.recipe import RunHeader, VerifierSpec


class SourceConfig(Config):
    task: str
    """registered task name or a task YAML path"""
    options: dict[str, Any] = {}
    """task knobs (e.g. {digits: 2})"""
    split: str = "train"
    """split the examples come from"""
    take: tuple[int, int | None] = (0, None)
    """[start, stop) slice of a seeded shuffle of the split: keeps different stages' prompts disjoint"""
    shuffle: bool = True
    """shuffle (seeded by the run seed) before slicing"""
    data_dir: str | None = None
    """user data dir for file-backed tasks (else RLVR_DATA_DIR, else the vendored copy)"""
    extra_verifiers: list[VerifierSpec] = []
    """verifiers added to the task's own (e.g. a format reward)"""
    reward_model: str | None = None
    """route this source's reward to a reward model instead of the task's verifiers: a stage name (kind rm) or
    a model dir. The task's verifiers are still run for evaluation-only metrics (weight 0)"""
    reward_model_options: dict[str, Any] = {}
    """options of the reward_model verifier (transform, temperature, threshold, ...)"""


class SourceRef(Config):
    source: str
    """a key of `sources`"""
    weight: float | None = None
    """mixing weight: each source's share of the mixed list is weight / Σ weights (None on all: concatenate)"""


class DataRef(Config):
    source: str | None = None
    """a key of `sources`: labelled examples turned into SFT pairs with `target`"""
    stage: str | None = None
    """a stage whose dataset output is used (rejection_sampling writes `sft` and `pairs`)"""
    output: str = "sft"
    """which dataset of `stage` (rejection_sampling: sft | pairs; rlaif: sft | pairs | judged)"""
    file: str | None = None
    """a JSONL file (SFT: prompt/completion; DPO/RM: prompt/chosen/rejected)"""
    target: str = "{solution}"
    """SFT completion template over a source example's fields (gold, question, meta fields)"""
    weight: float | None = None
    """mixing weight as for SourceRef"""
    limit: int | None = None
    """use at most this many records of this input"""

    @model_validator(mode="after")
    def _one_kind(self) -> "DataRef":
        given = [k for k in ("source", "stage", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a data entry names exactly one of source / stage / file (got {given or 'none'})")
        return self


class StageSpec(Config):
    name: str
    """unique stage name (its directory under <output_dir>/stages/)"""
    kind: str
    """stage kind: a key of rlvr.workflow.stages (sft, grpo, ppo, dpo, rejection_sampling, rm, prm, eval)"""
    model: str = "base"
    """starting model: base (the run's model), a previous stage's name, or a model dir"""
    prompts: list[SourceRef] = []
    """prompt sources for sampling stages (grpo, ppo, online dpo, rejection_sampling, eval), mixed by weight"""
    data: list[DataRef] = []
    """dataset inputs for sft, dpo, rm (mixed by weight)"""
    config: dict[str, Any] = {}
    """the kind's own config (validated by its config class)"""
    eval: bool = True
    """evaluate the model this stage produces with the run's `eval` block"""
    after: list[str] = []
    """extra ordering constraints (stage names that must finish first)"""
    seed: int | None = None
    """stage seed (None: run seed + the stage's index)"""
    lora: LoRAConfig | None = None
    """LoRA for this stage's training (None: the run's `lora`)"""

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompt_shorthand(cls, v: Any) -> Any:  # `prompts: add` or `prompts: [add, other]`
        if isinstance(v, str):
            v = [v]
        return [{"source": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v


class EvalBlock(Config):
    source: str | None = None
    """held-out source evaluated after every model-producing stage (None: only explicit eval stages)"""
    limit: int | None = 200
    """held-out prompts (None: all)"""
    n: int = 8
    """samples per prompt for sampled pass@k / maj@k"""
    ks: list[int] = [1, 8]
    """k values reported"""
    temperature: float = 1.0
    """sampling temperature for pass@k (greedy pass@1 is always reported)"""
    max_new_tokens: int = 64
    """completion budget"""
    base: bool = True
    """also evaluate the base model (the first row of the comparison table)"""
    train_limit: int | None = None
    """prompts for in-training evals (SFT stop threshold, GRPO eval_every); None: `limit`"""
    env: MultiTurnConfig | None = None
    """also evaluate every model in greedy dialogues with this environment (e.g. a multi-turn GRPO stage's
    `env`): solved within t turns, t = 1..max_turns; max_new_tokens is then the per-turn budget"""


class Workflow(RunHeader):
    """`rlvr run`: named data sources and a DAG of stages (the header fields: rlvr.recipe.RunHeader; `model` is
    the base model that `model: base` in a stage names; distributed/lora: sft/grpo/ppo/dpo train on every rank,
    other stages and evals run on rank 0; a stage's own `lora` overrides the run's)."""

    sources: dict[str, SourceConfig] = {}
    """named data sources"""
    stages: list[StageSpec]
    """the stages, in any order consistent with their inputs"""
    eval: EvalBlock = EvalBlock()
    """evaluation after every model-producing stage"""

    @model_validator(mode="after")
    def _check_graph(self) -> "Workflow":
        from rlvr.workflow.stages import get_stage_kind

        names = [s.name for s in self.stages]
        if not names:
            raise ValueError("stages: give at least one stage")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stages: duplicate stage names {dup}")
        if "base" in names:
            raise ValueError("stages: 'base' is reserved for the run's base model")
        for s in self.stages:
            where = f"stages.{s.name}"
            kind = get_stage_kind(s.kind, where=where)
            for ref in s.prompts:
                if ref.source not in self.sources:
                    raise ValueError(f"{where}.prompts: unknown source {ref.source!r} "
                                     f"(sources: {', '.join(self.sources) or 'none'})")
            for d in s.data:
                if d.source is not None and d.source not in self.sources:
                    raise ValueError(f"{where}.data: unknown source {d.source!r}")
                if d.stage is not None and d.stage not in names:
                    raise ValueError(f"{where}.data: unknown stage {d.stage!r}")
            if s.model not in names and s.model != "base" and not _looks_like_model(s.model):
                raise ValueError(f"{where}.model: {s.model!r} is not base, a stage name ({', '.join(names)}), "
                                 f"'tiny', an existing dir or a hub id")
            for a in s.after:
                if a not in names:
                    raise ValueError(f"{where}.after: unknown stage {a!r}")
            kind.check(s, where)                                  # the kind's own input rules
            cfg = validate(kind.config_cls, s.config, where=f"{where}.config")  # typos in stage configs, early
            _check_names(cfg, f"{where}.config")
        for name, src in self.sources.items():
            if src.reward_model is not None and src.reward_model in names:
                if next(s for s in self.stages if s.name == src.reward_model).kind != "rm":
                    raise ValueError(f"sources.{name}.reward_model: stage {src.reward_model!r} is not a kind rm stage")
        if self.eval.source is not None and self.eval.source not in self.sources:
            raise ValueError(f"eval.source: unknown source {self.eval.source!r}")
        if any(k < 1 or k > self.eval.n for k in self.eval.ks):
            raise ValueError(f"eval.ks {self.eval.ks} must lie in 1..eval.n={self.eval.n}")
        order(self)   # raises on a cycle
        return self

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)


def _looks_like_model(ref: str) -> bool:
    return ref == "tiny" or Path(ref).exists() or ("/" in ref and not ref.startswith((".", "/")))


def dependencies(wf: Workflow, spec: StageSpec) -> list[str]:
    """Stages whose outputs `spec` reads: its model, stage data, reward-model sources, and `after`."""
    names = {s.name for s in wf.stages}
    deps = [spec.model] if spec.model in names else []
    deps += [d.stage for d in spec.data if d.stage is not None]
    sources = [r.source for r in spec.prompts] + [d.source for d in spec.data if d.source is not None]
    deps += [wf.sources[s].reward_model for s in sources if wf.sources[s].reward_model in names]
    deps += spec.after
    return list(dict.fromkeys(deps))


def order(wf: Workflow) -> list[StageSpec]:
    """Topological order that keeps the file's order among independent stages (Kahn's algorithm)."""
    deps = {s.name: dependencies(wf, s) for s in wf.stages}
    done: list[str] = []
    pending = [s.name for s in wf.stages]
    while pending:
        ready = next((n for n in pending if all(d in done for d in deps[n])), None)
        if ready is None:
            raise ValueError(f"stages: dependency cycle among {', '.join(pending)}")
        done.append(ready)
        pending.remove(ready)
    return [wf.stage(n) for n in done]


def load_workflow(path: str | Path, overrides: Sequence[str] = ()) -> Workflow:
    """Read a run YAML; overrides address stages by name: `stages.cold_start.config.max_steps=10`."""
    data = read_yaml(path)
    stages = data.get("stages")
    if isinstance(stages, list) and all(isinstance(s, dict) and "name" in s for s in stages):
        names = [str(s["name"]) for s in stages]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"{path}: stages: duplicate stage names {dup}")
        keyed = {str(s["name"]): {k: v for k, v in s.items() if k != "name"} for s in stages}
        data["stages"] = keyed
        data = apply_overrides(data, overrides)
        if not isinstance(data["stages"], dict):
            raise ConfigError(f"{path}: stages: an override replaced the stage list")
        data["stages"] = [{"name": n, **(v or {})} for n, v in data["stages"].items()]
    else:
        data = apply_overrides(data, overrides)
    return validate(Workflow, data, where=str(path))


def _check_names(cfg: Any, where: str) -> None:
    """Algorithm names (advantage, policy_loss, ...) must be registered; task plugins may register their own, so
    an unknown name loads them before it counts as a typo."""
    from rlvr.algos.registry import check_algorithm_names

    try:
        check_algorithm_names(cfg, where)
    except ConfigError:
        from tasks.registry import list_tasks
        list_tasks()   # imports the rlvr.tasks entry points
        try:
            check_algorithm_names(cfg, where)
        except ConfigError as e:
            raise ValueError(str(e)) from None
