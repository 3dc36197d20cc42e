"""`rlvr train RECIPE.yaml`: cold-start SFT (optionally until an eval threshold) → one RL stage on fresh prompts
(grpo, ppo or dpo: `STAGE_RUNNERS`) → held-out evaluation, plus an optional labelled-SFT control with the same
compute, curves and a report.

Each stage writes into its own sub-directory and a `DONE.json` marker when finished; with `resume=True` a
finished stage is skipped and an unfinished one continues from its latest checkpoint. Every stage seeds the
RNGs at its start, so a resumed run reproduces an uninterrupted one (same seed, CPU determinism).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable

from rlvr.recipe import Recipe
from rlvr.trainers.checkpoint import atomic_write_json, seed_everything
from rlvr.trainers.common import load_model_and_tokenizer
from rlvr.trainers.sft import train_sft
from rlvr.workflow.datasets import source_sft_pairs


def _split_examples(recipe: Recipe, task) -> tuple[list, list]:
    """(sft_examples, rl_examples): SFT takes the first N of a seeded shuffle of the train split, RL the rest."""
    train = list(task.load(recipe.task.train_split))
    random.Random(recipe.seed).shuffle(train)
    n_sft = recipe.sft.examples if recipe.sft.enabled and recipe.sft.examples is not None else \
        (len(train) if recipe.sft.enabled else 0)
    sft, rl = train[:n_sft], train[n_sft:]
    if recipe.rl_stage and not rl:
        rl = train  # no held-back prompts: RL reuses the SFT prompts (it never sees their answers)
    return sft, rl


def with_extra_verifiers(task, specs):
    """A copy of `task` whose reward also sums the recipe's extra verifiers (primary verifier unchanged)."""
    import dataclasses

    from tasks.base import WeightedVerifier
    from verifiers.base import get_verifier

    if not specs:
        return task
    extra = [WeightedVerifier(get_verifier(s.name, **s.options), s.weight) for s in specs]
    return dataclasses.replace(task, verifiers=list(task.verifiers) + extra, _cache={})


class Runner:
    """Holds what the stages share: the recipe, the task, the data splits and the output layout."""

    def __init__(self, recipe: Recipe, *, resume: bool = False, log: Callable[[str], None] = print):
        from tasks.registry import get_task

        self.recipe, self.resume, self.log = recipe, resume, log
        if recipe.torch_threads:
            import torch
            torch.set_num_threads(recipe.torch_threads)
        self.out = Path(recipe.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if recipe.task.data_dir:
            import os
            os.environ["RLVR_DATA_DIR"] = recipe.task.data_dir
        self.task = with_extra_verifiers(get_task(recipe.task.name, **recipe.task.options),
                                         recipe.task.extra_verifiers)
        self.eval_task = get_task(recipe.task.eval_task) if recipe.task.eval_task else self.task
        self.sft_examples, self.rl_examples = _split_examples(recipe, self.task)
        self._engine = self._engine_model = None     # see engine()

    # -- evaluation -----------------------------------------------------------------------------------
    def engine(self, model, tokenizer):
        """The rollout engine for `model`: built once per model object and reused by its stage's training and
        evals (a vLLM engine takes seconds to start and holds a KV cache); a new model closes the old engine."""
        from rlvr.rollout import get_engine
        if self._engine_model is not model:
            self.close_engine()
            ro = self.recipe.rollout
            self._engine = get_engine(ro.backend, model=model, tokenizer=tokenizer, **ro.engine_kwargs())
            self._engine_model = model
        return self._engine

    def synced_engine(self, model, tokenizer):
        """engine() with the model's current weights (a no-op for an engine sharing the module; a copy or a
        vLLM engine is refreshed, since an SFT stage trains without telling the engine)."""
        engine = self.engine(model, tokenizer)
        engine.update_weights(model)
        return engine

    def close_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine = self._engine_model = None

    def greedy(self, model, tokenizer) -> float:
        from rlvr.eval import greedy_pass_at_1
        t = self.recipe.task
        return greedy_pass_at_1(self.eval_task, self.synced_engine(model, tokenizer), split=t.eval_split,
                                limit=t.eval_limit, tokenizer=tokenizer,
                                max_new_tokens=self.recipe.eval.max_new_tokens)

    def full_eval(self, model, tokenizer, name: str) -> dict[str, Any]:
        from rlvr.eval import evaluate
        ev, t = self.recipe.eval, self.recipe.task
        metrics = evaluate(self.eval_task, self.synced_engine(model, tokenizer), n=ev.n, ks=ev.ks,
                           split=t.eval_split, limit=t.eval_limit, temperature=ev.temperature,
                           max_new_tokens=ev.max_new_tokens, tokenizer=tokenizer, out_dir=self.out / name,
                           seed=self.recipe.seed, progress=False, batch_prompts=1 << 20)  # the engine chunks
        # Flatten {"value", "ci"} entries so summaries and reports can read plain numbers.
        metrics = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in metrics.items()}
        metrics["greedy_pass@1"] = self.greedy(model, tokenizer)
        if ev.env is not None:   # multi-turn: solved within t turns with the environment's feedback
            from rlvr.eval import multiturn_greedy_eval
            metrics.update(multiturn_greedy_eval(self.eval_task, self.synced_engine(model, tokenizer), ev.env,
                                                 split=t.eval_split, limit=t.eval_limit, tokenizer=tokenizer,
                                                 max_new_tokens=ev.max_new_tokens))
        return metrics

    # -- stages ---------------------------------------------------------------------------------------
    def stage_dir(self, name: str) -> Path:
        return self.out / name

    def done(self, name: str) -> dict | None:
        marker = self.stage_dir(name) / "DONE.json"
        return json.loads(marker.read_text()) if self.resume and marker.exists() else None

    def finish(self, name: str, model, tokenizer, summary: dict) -> None:
        """Save the stage's model (LoRA: merged into the base weights) and its DONE marker; rank 0 only."""
        from rlvr.distributed import context, save_model
        from rlvr.distributed.zero3 import full_parameters
        with full_parameters(model):                        # ZeRO-3: the trained model is still partitioned
            if context().is_main:
                save_model(model, self.stage_dir(name) / "model", tokenizer=tokenizer)
                atomic_write_json(self.stage_dir(name) / "DONE.json", summary)
        context().barrier()

    def load(self, name: str | None, *, train: bool = False):
        """The start model of a stage (`train`: with fresh LoRA adapters when the recipe asks for them)."""
        from rlvr.distributed import apply_lora
        path = str(self.stage_dir(name) / "model") if name else self.recipe.model.path
        model, tok = load_model_and_tokenizer(path, dtype=self.recipe.model.dtype,
                                              attn_implementation=self.recipe.model.attn_implementation)
        return (apply_lora(model, self.recipe.lora) if train else model), tok

    def run_sft(self, name: str, start: str | None, examples, cfg, seed_offset: int) -> dict:
        if (s := self.done(name)) is not None:
            self.log(f"{name}: already complete, skipped")
            return s
        seed_everything(self.recipe.seed + seed_offset)
        model, tok = self.load(start, train=True)
        pairs = source_sft_pairs(self.task, examples, tok, self.recipe.sft.target, where="sft.target")
        summary = train_sft(model, tok, pairs, cfg, out_dir=self.stage_dir(name), seed=self.recipe.seed,
                            evaluate=lambda m: self.greedy(m, tok), resume=self.resume, name=name, log_fn=self.log,
                            dist=self.recipe.distributed)
        self.finish(name, model, tok, summary)
        return summary

    def run_rl(self, name: str, start: str | None) -> dict:
        """The recipe's RL stage `name` (a key of STAGE_RUNNERS) from the model of stage `start`."""
        if (s := self.done(name)) is not None:
            self.log(f"{name}: already complete, skipped")
            return s
        seed_everything(self.recipe.seed + 2)
        model, tok = self.load(start, train=True)
        summary = STAGE_RUNNERS[name](self, model, tok, getattr(self.recipe, name), name)
        self.finish(name, model, tok, summary)
        return summary


# -- RL stage runners: (runner, model, tokenizer, stage config, stage name) -> summary --------------------
def _run_grpo(r: Runner, model, tok, cfg, name: str) -> dict:
    from rlvr.trainers.grpo import train_grpo
    return train_grpo(model, tok, r.engine(model, tok), r.task, r.rl_examples, cfg, out_dir=r.stage_dir(name),
                      seed=r.recipe.seed, evaluate=lambda m: r.greedy(m, tok), resume=r.resume, name=name,
                      log_fn=r.log, dist=r.recipe.distributed)


def _run_ppo(r: Runner, model, tok, cfg, name: str) -> dict:
    from rlvr.trainers.ppo import train_ppo
    return train_ppo(model, tok, r.engine(model, tok), r.task, r.rl_examples, cfg, out_dir=r.stage_dir(name),
                     seed=r.recipe.seed, evaluate=lambda m: r.greedy(m, tok), resume=r.resume, name=name,
                     log_fn=r.log, dist=r.recipe.distributed)


def _run_dpo(r: Runner, model, tok, cfg, name: str) -> dict:
    """Offline DPO on `cfg.data` when given, else online rounds sampled from the policy (online_dpo)."""
    from rlvr.trainers import dpo, online_dpo

    common = dict(out_dir=r.stage_dir(name), seed=r.recipe.seed, evaluate=lambda m: r.greedy(m, tok),
                  resume=r.resume, name=name, log_fn=r.log, dist=r.recipe.distributed)
    if cfg.data is None:
        return online_dpo.train_online_dpo(model, tok, r.engine(model, tok), r.task, r.rl_examples, cfg, **common)
    paired = dpo.get_preference_loss(cfg.dpo.loss).paired
    items = dpo.encode_records(dpo.read_preference_records(cfg.data), tok, cfg.dpo.max_length, paired)
    return dpo.train_dpo(model, tok, items, cfg.dpo, **common)


STAGE_RUNNERS: dict[str, Callable[..., dict]] = {"grpo": _run_grpo, "ppo": _run_ppo, "dpo": _run_dpo}


def control_config(recipe: Recipe, grpo_steps_done: int):
    """Labelled-SFT control with the same compute as RL, counted in sequences trained on (fwd+bwd):
    GRPO trains on prompts_per_step × group_size × mu sequences per step (and also pays for sampling)."""
    g = recipe.grpo
    seqs = grpo_steps_done * g.prompts_per_step * g.group_size * g.mu
    steps = max(1, seqs // recipe.control.batch_size)
    return recipe.sft.model_copy(update={"max_steps": steps, "batch_size": recipe.control.batch_size,
                                         "stop_at_pass1": None, "warmup_steps": 0,
                                         "torch_threads": None,   # it may run beside the RL stage
                                         "eval_every": max(1, steps // 10)})


def run_recipe(recipe: Recipe, *, resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.time()
    r = Runner(recipe, resume=resume, log=log)   # imports task plugins, which may register algorithms
    if (rl := recipe.rl_stage) is not None:          # a misspelt name fails now, not after the SFT stage
        from rlvr.algos.registry import check_algorithm_names
        check_algorithm_names(getattr(recipe, rl), rl)
    log(f"task {r.task.name}: {len(r.sft_examples)} SFT / {len(r.rl_examples)} RL prompts; held-out: "
        f"{r.eval_task.name}/{recipe.task.eval_split}; output {r.out}")
    stages: list[dict[str, Any]] = []
    start = None
    if recipe.sft.enabled:
        s = r.run_sft("sft", None, r.sft_examples, recipe.sft, seed_offset=1)
        stages.append({"name": "sft", "kind": "sft", **s})
        start = "sft"
    start_eval = r.done("eval_start") or _eval_stage(r, "eval_start", start)
    summary: dict[str, Any] = {"recipe": recipe.name, "pass@1_start": start_eval["greedy_pass@1"],
                               "eval_start": start_eval}
    if rl is not None:
        beside = _start_control_beside(r, start) if recipe.control.enabled and _control_in_parallel(recipe) \
            else None
        try:
            g = r.run_rl(rl, start)
            end_eval = r.done("eval_end") or _eval_stage(r, "eval_end", rl)
        except BaseException:   # the RL stage failed (or was interrupted): do not wait for the control
            if beside not in (None, "done"):
                beside.terminate()
            raise
        stages.append({"name": rl, "kind": rl, **g})
        summary.update({"pass@1_end": end_eval["greedy_pass@1"], "eval_end": end_eval})
        if recipe.control.enabled:
            c, ctl_eval, steps = _join_control(r, beside) if beside is not None else \
                _run_control(r, start, g["steps"])
            stages.append({"name": "control", "kind": "sft", **c})
            summary.update({"pass@1_sft_control": ctl_eval["greedy_pass@1"], "eval_control": ctl_eval,
                            "control_steps": steps})
    r.close_engine()
    summary["stages"] = stages
    summary["wall_s"] = time.time() - t0
    from rlvr.distributed import context
    if context().is_main:
        atomic_write_json(r.out / "summary.json", summary)
        from rlvr.report import write_report
        write_report(r.out, recipe, summary)
    return summary


# -- the labelled-SFT control --------------------------------------------------------------------------------
def _run_control(r: Runner, start: str | None, rl_steps: int) -> tuple[dict, dict, int]:
    """Control SFT from the RL stage's start model for the same compute, then its held-out eval."""
    ctl_cfg = control_config(r.recipe, rl_steps)
    # The control sees the same prompts as RL, but with their gold answers as SFT targets.
    c = r.run_sft("control", start, r.rl_examples, ctl_cfg, seed_offset=3)
    ctl_eval = r.done("eval_control") or _eval_stage(r, "eval_control", "control")
    return c, ctl_eval, ctl_cfg.max_steps


def _control_in_parallel(recipe: Recipe) -> bool:
    """control.parallel, or (None) whether it pays: a GRPO stage (whose planned steps size the control), one process
    on the CPU, and enough cores for two single-stage jobs of torch_threads each."""
    import os

    from rlvr.distributed import context
    if recipe.control.parallel is not None:
        return recipe.control.parallel and recipe.rl_stage == "grpo"
    return (recipe.rl_stage == "grpo" and context().world_size == 1 and context().device.type == "cpu"
            and (os.cpu_count() or 1) >= 2 * (recipe.torch_threads or 1))


def _start_control_beside(r: Runner, start: str | None):
    """Start the control in a spawned process (it only reads the start model and the data, and writes its own
    stage dirs), unless it is already complete. Its output goes to control.log."""
    import multiprocessing

    if r.done("control") is not None and r.done("eval_control") is not None:
        return "done"
    log_path = r.out / "control.log"
    r.log(f"control: running beside {r.recipe.rl_stage} in a second process (log: {log_path})")
    proc = multiprocessing.get_context("spawn").Process(
        target=_control_job, args=(r.recipe.model_dump_json(), r.resume, start, str(log_path)))
    proc.start()
    return proc


def _join_control(r: Runner, beside) -> tuple[dict, dict, int]:
    from rlvr.errors import RLVRError

    if beside != "done":
        beside.join()
        if beside.exitcode != 0:
            raise RLVRError(f"control stage failed (exit code {beside.exitcode}); see {r.out / 'control.log'}")
        r.log(f"control: finished beside {r.recipe.rl_stage}")
    read = lambda name: json.loads((r.stage_dir(name) / "DONE.json").read_text())   # noqa: E731
    return read("control"), read("eval_control"), control_config(r.recipe, r.recipe.grpo.steps).max_steps


def _control_job(recipe_json: str, resume: bool, start: str | None, log_path: str) -> None:
    """Entry point of the control process. It exits if its parent dies (kill -9 of a run must not leave it
    writing checkpoints that a resumed run's own control job would then race with)."""
    import os
    import sys
    import threading

    parent = os.getppid()

    def watchdog() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    sys.stdout = sys.stderr = open(log_path, "a", buffering=1)   # open until the process exits
    recipe = Recipe.model_validate_json(recipe_json)
    r = Runner(recipe, resume=resume, log=lambda msg: print(msg, flush=True))
    try:
        _run_control(r, start, recipe.grpo.steps)
    finally:
        # A multiprocessing child skips atexit but joins its own children on exit: stop the verifier pool (and
        # any engine) here, or the process never ends.
        from verifiers.pool import shutdown
        r.close_engine()
        shutdown()


def _eval_stage(r: Runner, name: str, model_stage: str | None) -> dict[str, Any]:
    """Held-out evaluation of a stage's saved model; rank 0 evaluates, the other ranks receive its metrics."""
    from rlvr.distributed import context
    metrics = None
    if context().is_main:
        seed_everything(r.recipe.seed + 10)
        model, tok = r.load(model_stage)
        metrics = r.full_eval(model, tok, name)
        r.stage_dir(name).mkdir(parents=True, exist_ok=True)
        atomic_write_json(r.stage_dir(name) / "DONE.json", metrics)
    return context().broadcast_object(metrics)
