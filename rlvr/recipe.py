"""The recipe schema: one YAML file = model + task + stage configs. `rlvr train RECIPE.yaml k=v ...`.

Each section is a typed config with a one-line doc per field; unknown keys and wrong types are one-line
errors naming the key. Cross-field checks live here, not in the trainers.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from rlvr.config import Config, load_config
from rlvr.distributed.config import DistributedConfig, LoRAConfig
from rlvr.envs.config import MultiTurnConfig
from rlvr.trainers.grpo import GRPOConfig
from rlvr.trainers.online_dpo import OnlineDPOConfig
from rlvr.trainers.ppo import PPOConfig
from rlvr.trainers.sft import SFTConfig

# Recipe sections that are an RL / preference stage after SFT; at most one is enabled, and
# `rlvr.pipeline.STAGE_RUNNERS` maps each name to the function that runs it.
RL_STAGES = ("grpo", "ppo", "dpo")


class ModelConfig(Config):
    path: str = "tiny"
    """HF model dir / hub name, or `tiny` for the embedded 0.86M-param char-level Llama"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """parameter dtype (keep float32 master weights and use bf16 autocast on CPU)"""
    attn_implementation: str = "auto"
    """HF attention kernel: auto (eager on CPU, whose SDPA backward is slow; sdpa on CUDA) | eager | sdpa | ..."""


class VerifierSpec(Config):
    name: str
    """registered verifier name"""
    weight: float = 1.0
    """weight in the task's reward sum"""
    options: dict[str, Any] = {}
    """verifier options"""


class TaskConfig(Config):
    name: str = "arithmetic"
    """registered task name or a path to a task YAML file"""
    options: dict[str, Any] = {}
    """task knobs, e.g. {digits: 2, reverse_answer: true}"""
    train_split: str = "train"
    """split that SFT and RL prompts come from"""
    eval_split: str = "test"
    """held-out split for evaluation"""
    eval_task: str | None = None
    """evaluate on another task (e.g. train on math12k, evaluate on math500); None: the same task"""
    eval_limit: int | None = 200
    """held-out prompts used by evals (None: all)"""
    data_dir: str | None = None
    """user data dir (else RLVR_DATA_DIR, else the vendored copy)"""
    extra_verifiers: list[VerifierSpec] = []
    """verifiers added to the task's own (e.g. a format reward), with their weights"""


class RolloutConfig(Config):
    backend: str = "hf"
    """rollout engine: hf (or vllm where installed)"""
    bf16: bool = True
    """bf16 autocast during generation"""
    dtype: str | None = None
    """weights to sample with, e.g. bfloat16: the engine keeps its own copy in that dtype, refreshed after every
    update (faster sampling for real models on CPU); None: share the trainer's module"""
    max_batch_sequences: int | None = None
    """most sequences decoded together (HF: per generate chunk, default 256; vLLM: its max_num_seqs); tiny models
    decode faster in bigger batches (per-step overhead dominates), real ones need the KV-cache memory"""
    sleep_mode: bool | None = None
    """vLLM only: offload its weights and free its KV cache while the trainer runs (None: on where vLLM supports
    it, i.e. CUDA; CPU has none)"""

    @model_validator(mode="after")
    def _vllm_only(self) -> "RolloutConfig":
        if self.sleep_mode is not None and self.backend != "vllm":
            raise ValueError(f"rollout.sleep_mode is a vLLM option; rollout.backend is {self.backend!r}")
        return self

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `rlvr.rollout.get_engine` besides model and tokenizer."""
        return {"autocast_bf16": self.bf16, **{k: v for k, v in (("dtype", self.dtype),
                ("max_batch_sequences", self.max_batch_sequences), ("sleep_mode", self.sleep_mode)) if v is not None}}


class SFTStageConfig(SFTConfig):
    examples: int | None = None
    """labelled examples SFT may use (first N of a seeded shuffle of the train split); RL gets the rest"""
    target: str = "{solution}"
    """completion template over the example's fields (`gold`, `question`, meta fields)"""


class DPOStageConfig(OnlineDPOConfig):
    data: str | None = None
    """offline preference JSONL (pairs, or labelled completions for kto); None: pairs are sampled from the
    policy every round (online / iterative DPO, or SPIN with pairs: spin)"""


class EvalConfig(Config):
    n: int = 8
    """samples per prompt for sampled pass@k"""
    ks: list[int] = [1, 8]
    """k values reported"""
    temperature: float = 1.0
    """sampling temperature for pass@k (greedy pass@1 is always reported too)"""
    max_new_tokens: int = 64
    """completion budget at eval"""
    env: MultiTurnConfig | None = None
    """also evaluate greedy dialogues with this environment (e.g. the GRPO stage's `env`): solved within t turns,
    t = 1..max_turns (rlvr.eval.multiturn_greedy_eval); max_new_tokens is then the per-turn budget"""


class ControlConfig(Config):
    enabled: bool = False
    """also continue SFT from the same start with labelled data for the same compute as RL"""
    batch_size: int = 64
    """control SFT batch size"""
    parallel: bool | None = None
    """run the control (and its eval) in a second process beside the GRPO stage, so a CPU box with spare cores
    overlaps them; None = when the run is one process on the CPU with at least 2 x torch_threads cores"""


class RunHeader(Config):
    """What every run file starts with, a `rlvr train` recipe or a `rlvr run` workflow: its name and provenance,
    seed, threads, output dir, base model, rollout engine, and the scale-out settings of its training stages."""

    name: str = "run"
    """run name"""
    description: str = ""
    """what this run does"""
    paper: str = ""
    """the paper it follows, and how it differs"""
    seed: int = 0
    """one seed for data order, init and sampling (each stage derives its own)"""
    torch_threads: int | None = None
    """torch intra-op threads (None: torch's default). 1 is best for tiny models: small matmuls gain nothing
    from a second thread, and with any other load on the box 2 threads can run 20x slower"""
    output_dir: str = "runs/{name}"
    """where stages, checkpoints, metrics, plots and the report go ({name} = the run name)"""
    model: ModelConfig = ModelConfig()
    """the base model"""
    rollout: RolloutConfig = RolloutConfig()
    """rollout engine for every sampling stage"""
    distributed: DistributedConfig = DistributedConfig()
    """DeepSpeed ZeRO config and gradient checkpointing for every training stage (launch: docs/scaling.md)"""
    lora: LoRAConfig = LoRAConfig()
    """train LoRA adapters (peft) in every training stage instead of all weights; stages save merged weights"""

    @property
    def out_dir(self) -> str:
        return self.output_dir.format(name=self.name)


class Recipe(RunHeader):
    """`rlvr train`: cold-start SFT -> one RL stage -> held-out eval (+ a labelled-SFT control)."""

    task: TaskConfig = TaskConfig()
    sft: SFTStageConfig = SFTStageConfig()
    grpo: GRPOConfig = GRPOConfig()
    ppo: PPOConfig = PPOConfig(enabled=False)
    dpo: DPOStageConfig = DPOStageConfig(enabled=False)
    control: ControlConfig = ControlConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        rl = [name for name in RL_STAGES if getattr(self, name).enabled]
        if not (self.sft.enabled or rl):
            raise ValueError(f"enable at least one of sft / {' / '.join(RL_STAGES)}")
        if len(rl) > 1:
            raise ValueError(f"enable at most one RL stage; enabled: {', '.join(rl)} (set the others' enabled: false)")
        if any(k < 1 or k > self.eval.n for k in self.eval.ks):
            raise ValueError(f"eval.ks {self.eval.ks} must lie in 1..eval.n={self.eval.n}")
        if self.control.enabled and not self.grpo.enabled:
            raise ValueError("control.enabled compares against RL: it needs grpo.enabled")
        if self.grpo.enabled and self.grpo.group_size < 2:
            raise ValueError("grpo.group_size must be >= 2 (advantages are relative within a group)")
        return self

    @property
    def rl_stage(self) -> str | None:
        """The enabled RL stage's section name (one of RL_STAGES), or None."""
        return next((name for name in RL_STAGES if getattr(self, name).enabled), None)


def load_recipe(path: str, overrides: list[str] = ()) -> Recipe:
    return load_config(Recipe, path, overrides)
