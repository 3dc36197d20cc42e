"""`rlvr run RUN.yaml`: execute a workflow's stages in dependency order as one resumable run.

Layout of <output_dir>:
    manifest.json            lineage: code version, per-stage fingerprint, inputs, outputs, seed, times
    stages/<name>/           each stage's checkpoints, metrics, model/, datasets, INPUTS.json, DONE.json
    stages/<name>/eval/      the run's eval block applied to the model the stage produced
    eval_base/               the same eval on the base model
    summary.json, report.md  written at the end (and after a failure, with the failed stage marked)

Resuming is the default. A stage with a DONE.json whose fingerprint (its config and, recursively, its inputs)
matches is skipped; an unfinished one continues from its checkpoints (the trainers resume mid-stage after
kill -9); a stage whose config or inputs changed is moved aside to `<name>.stale-N` (never deleted) and re-run,
and so is everything downstream of it, because their fingerprints include its fingerprint.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from rlvr.errors import ConfigError
from rlvr.trainers.checkpoint import atomic_write_json, seed_everything
from rlvr.workflow.lineage import Manifest, digest
from rlvr.workflow.sources import MixtureTask, mix_by_weight, source_examples, source_task, tag
from rlvr.workflow.spec import StageSpec, Workflow, dependencies, order
from rlvr.workflow.stages import StageResult, get_stage_kind


class StageContext:
    """Everything a stage kind needs, resolved from the run: its start model, inputs, engine and evals."""

    def __init__(self, run: "WorkflowRunner", spec: StageSpec, cfg: Any, seed: int):
        self.run, self.spec, self.cfg, self.seed = run, spec, cfg, seed
        self.dir = run.stage_dir(spec.name)
        self.log = run.log
        self._engine = self._engine_model = None

    # -- models -----------------------------------------------------------------------------------------
    @property
    def dist(self):
        """The run's `distributed:` section, passed to the trainers."""
        return self.run.wf.distributed

    @property
    def lora(self):
        """The stage's `lora:` section, else the run's (a stage's own section overrides the run's)."""
        return self.spec.lora or self.run.wf.lora

    def model_path(self) -> str:
        return self.run.model_path(self.spec.model)

    def load_model(self, train: bool = False):
        """The start model; `train`: with fresh LoRA adapters when the stage (or the run) asks for them."""
        from rlvr.trainers.common import load_model_and_tokenizer
        mc = self.run.wf.model
        model, tok = load_model_and_tokenizer(self.model_path(), dtype=mc.dtype,
                                              attn_implementation=mc.attn_implementation)
        if train:
            from rlvr.distributed import apply_lora
            model = apply_lora(model, self.lora)
        return model, tok

    def save_model(self, model, tokenizer) -> str:
        """Rank 0 saves a plain HF dir (LoRA merged) to <stage>/model atomically (temp dir + rename)."""
        import os
        import shutil

        from rlvr.distributed import context, save_model
        from rlvr.distributed.zero3 import full_parameters
        path = self.dir / "model"
        with full_parameters(model):                        # ZeRO-3: the trained model is still partitioned
            if context().is_main:
                tmp = self.dir / ".model.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                save_model(model, tmp, tokenizer=tokenizer)
                if path.exists():
                    shutil.rmtree(path)
                os.rename(tmp, path)
        if get_stage_kind(self.spec.kind).collective:
            context().barrier()
        return str(path)

    def engine(self, model, tokenizer):
        """One rollout engine per model object, shared by the stage's sampling and evals; closed at stage end."""
        from rlvr.rollout import get_engine
        if self._engine_model is not model:
            self.close()
            ro = self.run.wf.rollout
            self._engine = get_engine(ro.backend, model=model, tokenizer=tokenizer, **ro.engine_kwargs())
            self._engine_model = model
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine = self._engine_model = None

    # -- inputs -----------------------------------------------------------------------------------------
    def prompts(self) -> tuple[MixtureTask, list]:
        """(task, examples) of the stage's prompt sources, mixed by weight; scoring routes per source."""
        if not self.spec.prompts:
            raise ConfigError(f"stages.{self.spec.name}: kind {self.spec.kind} needs `prompts`")
        parts, lists = {}, []
        for ref in self.spec.prompts:
            parts[ref.source] = self.run.task(ref.source)
            lists.append(tag(self.run.examples(ref.source), ref.source))
        return MixtureTask(parts), mix_by_weight(lists, [r.weight for r in self.spec.prompts], self.seed)

    def sft_examples(self, tokenizer) -> list:
        """SFT pairs from the stage's `data`: sources (gold through `target`), stage datasets, files."""
        from rlvr.trainers.sft import SFTExample
        from rlvr.workflow.datasets import read_sft_file, source_sft_pairs

        lists = []
        for d in self.spec.data:
            if d.source is not None:
                items = source_sft_pairs(self.run.task(d.source), self.run.examples(d.source), tokenizer,
                                         d.target, where=f"stages.{self.spec.name}.data")
            else:
                items = [SFTExample(p, c) for p, c in read_sft_file(self.data_file(d))]
            lists.append(items[:d.limit])
        return mix_by_weight(lists, [d.weight for d in self.spec.data], self.seed)

    def data_file(self, d) -> Path:
        """The JSONL behind a stage/file data entry."""
        if d.file is not None:
            return Path(d.file)
        ds = self.run.result(d.stage).datasets
        if d.output not in ds:
            raise ConfigError(f"stages.{self.spec.name}.data: stage {d.stage!r} wrote no {d.output!r} dataset "
                              f"(it wrote: {', '.join(ds) or 'none'})")
        return Path(ds[d.output])

    # -- evaluation -------------------------------------------------------------------------------------
    def train_eval(self, tokenizer) -> Callable[[Any], float] | None:
        """Greedy pass@1 on the run's eval source (for SFT stop thresholds and RL eval_every), or None."""
        ev = self.run.wf.eval
        if ev.source is None:
            return None
        from rlvr.eval import greedy_pass_at_1
        task, src = self.run.task(ev.source), self.run.wf.sources[ev.source]
        limit = ev.train_limit if ev.train_limit is not None else ev.limit
        return lambda m: greedy_pass_at_1(task, self.engine(m, tokenizer), split=src.split, limit=limit,
                                          tokenizer=tokenizer, max_new_tokens=ev.max_new_tokens)


class WorkflowRunner:
    def __init__(self, wf: Workflow, *, recipe_path: str | None = None, log: Callable[[str], None] = print):
        self.wf, self.log = wf, log
        self.out = Path(wf.out_dir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.order = order(wf)
        self._tasks: dict[str, Any] = {}
        self._results: dict[str, StageResult] = {}
        self.fingerprints: dict[str, str] = {}
        from rlvr.distributed import context
        self.dist = context()          # under `deepspeed`: rank 0 writes every run-level file and runs evals
        self.main = self.dist.is_main
        self.manifest = Manifest(self.out / "manifest.json", enabled=self.main, run={
            "run": wf.name, "recipe": recipe_path, "recipe_digest": digest(wf.model_dump()), "seed": wf.seed,
            "edges": [[d, s.name] for s in self.order for d in dependencies(wf, s)]})
        if wf.torch_threads:
            import torch
            torch.set_num_threads(wf.torch_threads)

    # -- lookups ----------------------------------------------------------------------------------------
    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name

    def result(self, name: str) -> StageResult:
        return self._results[name]

    def model_path(self, ref: str) -> str:
        if ref == "base":
            return self.wf.model.path
        if ref in self._results:
            path = self._results[ref].model_dir
            if path is None:
                raise ConfigError(f"stage {ref!r} produced no model to start from")
            return path
        return ref   # a model dir or hub name

    def task(self, source: str):
        if source not in self._tasks:
            cfg = self.wf.sources[source]
            rm = cfg.reward_model
            rm_dir = self.model_path(rm) if rm is not None else None
            self._tasks[source] = source_task(cfg, reward_model_dir=rm_dir)
        return self._tasks[source]

    def examples(self, source: str) -> list:
        return source_examples(self.task(source), self.wf.sources[source], self.wf.seed)

    # -- fingerprints -----------------------------------------------------------------------------------
    def _source_fp(self, name: str) -> dict[str, Any]:
        cfg = self.wf.sources[name]
        rm = cfg.reward_model
        return {**_fp(cfg), "reward_model": self.fingerprints.get(rm, rm)}

    def fingerprint(self, spec: StageSpec, seed: int) -> str:
        model = self.fingerprints.get(spec.model) or (_fp(self.wf.model) if spec.model == "base"
                                                      else spec.model)
        data = [{**_fp(d), "stage": self.fingerprints.get(d.stage) if d.stage else None,
                 "source": self._source_fp(d.source) if d.source else None} for d in spec.data]
        prompts = [{"weight": r.weight, "source": self._source_fp(r.source)} for r in spec.prompts]
        lora = _fp(spec.lora or self.wf.lora)
        return digest({"kind": spec.kind, "model": model, "data": data, "prompts": prompts, "config": spec.config,
                       "seed": seed, "after": [self.fingerprints.get(a) for a in spec.after],
                       "rollout": _fp(self.wf.rollout), "lora": lora, "load": _fp(self.wf.model),
                       "distributed": {**_fp(self.wf.distributed), "world_size": self.dist.world_size}})

    # -- execution --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.time()
        rows: list[dict[str, Any]] = []
        summary: dict[str, Any] = {"run": self.wf.name, "stages": rows}
        failed = None
        try:
            if self.wf.eval.source is not None and self.wf.eval.base:
                summary["base_eval"] = self._eval("base", self.out / "eval_base",
                                                  digest({"model": _fp(self.wf.model)}))
            for i, spec in enumerate(self.order):
                seed = spec.seed if spec.seed is not None else self.wf.seed + i
                row = {"name": spec.name, "kind": spec.kind, "status": "running"}
                rows.append(row)
                row.update(self._run_stage(spec, seed))
        except BaseException as e:
            failed = e
            if rows and rows[-1]["status"] == "running":
                rows[-1].update(status="failed", error=f"{type(e).__name__}: {e}"[:500])
                self.manifest.stage(rows[-1]["name"], status="failed", error=rows[-1]["error"])
            raise
        finally:
            done = {r["name"] for r in rows}
            rows += [{"name": s.name, "kind": s.kind, "status": "pending"} for s in self.order if s.name not in done]
            summary["wall_s"] = time.time() - t0
            summary["status"] = "failed" if failed else "complete"
            if self.main:
                atomic_write_json(self.out / "summary.json", summary)
                from rlvr.workflow.report import write_run_report
                write_run_report(self.out)
        return summary

    def _run_stage(self, spec: StageSpec, seed: int) -> dict[str, Any]:
        kind = get_stage_kind(spec.kind)
        fp = self.fingerprint(spec, seed)
        self.fingerprints[spec.name] = fp
        d = self.stage_dir(spec.name)
        marker = d / "DONE.json"
        prev = json.loads(marker.read_text()) if marker.exists() else None
        if prev is not None and prev.get("fingerprint") == fp:
            self.log(f"{spec.name}: already complete, skipped")
            result = StageResult(prev["metrics"], self._abs(prev.get("model_dir")),
                                 {k: self._abs(v) for k, v in prev.get("datasets", {}).items()})
            wall = prev.get("wall_s")
        else:
            inputs = d / "INPUTS.json"
            resumed = inputs.exists() and prev is None and json.loads(inputs.read_text()).get("fingerprint") == fp
            if self.main:
                if d.exists() and not resumed:
                    self._move_stale(d)
                d.mkdir(parents=True, exist_ok=True)
                atomic_write_json(inputs, {"fingerprint": fp, "spec": spec.model_dump(), "seed": seed,
                                           "model": self.model_path(spec.model)})
            self.manifest.stage(spec.name, kind=spec.kind, status="running", fingerprint=fp, seed=seed,
                                inputs=self._inputs(spec), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self.dist.barrier()
            self.log(f"== stage {spec.name} ({spec.kind}){' (resuming)' if resumed else ''}")
            cfg = kind.config_cls.model_validate(spec.config)
            seed_everything(seed)
            t = time.time()
            result = None
            if kind.collective or self.main:   # other kinds (sampling, RM/PRM, eval) run on rank 0 only
                ctx = StageContext(self, spec, cfg, seed)
                try:
                    result = kind.run(ctx, cfg)
                finally:
                    ctx.close()
            result = self.dist.broadcast_object(result)
            wall = time.time() - t
            if self.main:
                atomic_write_json(marker, {"fingerprint": fp, "metrics": result.metrics,
                                           "model_dir": self._rel(result.model_dir),
                                           "datasets": {k: self._rel(v) for k, v in result.datasets.items()},
                                           "wall_s": wall})
            self.dist.barrier()
        self._results[spec.name] = result
        self.manifest.stage(spec.name, kind=spec.kind, status="complete", fingerprint=fp, seed=seed,
                            inputs=self._inputs(spec), outputs={"model": result.model_dir, **result.datasets},
                            wall_s=wall, finished=self.manifest.data["stages"].get(spec.name, {}).get(
                                "finished") or time.strftime("%Y-%m-%dT%H:%M:%S"))
        row: dict[str, Any] = {"status": "complete", "fingerprint": fp, "wall_s": wall,
                               "metrics": dict(result.metrics), "model_dir": result.model_dir,
                               "datasets": result.datasets}
        if kind.produces_model and result.model_dir and spec.eval and self.wf.eval.source is not None:
            ev = self._eval(result.model_dir, d / "eval", digest({"stage": fp}))
            row["eval"] = ev
            row["metrics"].update(_headline(ev))
        return row

    def _inputs(self, spec: StageSpec) -> dict[str, Any]:
        return {"model": {"ref": spec.model, "path": self.model_path(spec.model),
                          "fingerprint": self.fingerprints.get(spec.model)},
                "prompts": [{"source": r.source, "weight": r.weight, **self.wf.sources[r.source].model_dump()}
                            for r in spec.prompts],
                "data": [{**d.model_dump(exclude_none=True),
                          **({"path": self._results[d.stage].datasets.get(d.output),
                              "fingerprint": self.fingerprints.get(d.stage)} if d.stage else {})}
                         for d in spec.data]}

    def _rel(self, path: str | None) -> str | None:
        """Paths inside the run dir are stored relative to it, so a moved run dir still resumes."""
        if path is None:
            return None
        p = Path(path).resolve()
        return str(p.relative_to(self.out)) if p.is_relative_to(self.out) else str(p)

    def _abs(self, path: str | None) -> str | None:
        return None if path is None else str(self.out / path)

    def _move_stale(self, d: Path) -> None:
        k = 1
        while (stale := d.with_name(f"{d.name}.stale-{k}")).exists():
            k += 1
        d.rename(stale)
        self.log(f"{d.name}: config or inputs changed since the last run; old outputs moved to {stale}")

    def _eval(self, model_ref: str, out: Path, fp: str) -> dict[str, Any]:
        """The run's eval block on a model: greedy pass@1 + sampled pass@k / maj@k; cached by fingerprint."""
        marker = out / "DONE.json"
        key = digest({"model": fp, "eval": _fp(self.wf.eval), "source": self._source_fp(self.wf.eval.source)})
        if marker.exists() and (prev := json.loads(marker.read_text())).get("fingerprint") == key:
            return prev["metrics"]
        metrics = self._eval_now(model_ref, out, key) if self.main else None
        return self.dist.broadcast_object(metrics)

    def _eval_now(self, model_ref: str, out: Path, key: str) -> dict[str, Any]:
        marker = out / "DONE.json"
        from rlvr.eval import evaluate, greedy_pass_at_1
        from rlvr.rollout import get_engine
        from rlvr.trainers.common import load_model_and_tokenizer

        ev, src = self.wf.eval, self.wf.sources[self.wf.eval.source]
        seed_everything(self.wf.seed + 10_000)
        model, tok = load_model_and_tokenizer(self.model_path(model_ref), dtype=self.wf.model.dtype,
                                              attn_implementation=self.wf.model.attn_implementation)
        engine = get_engine(self.wf.rollout.backend, model=model, tokenizer=tok, **self.wf.rollout.engine_kwargs())
        task = self.task(self.wf.eval.source)
        try:
            m = evaluate(task, engine, n=ev.n, ks=ev.ks, split=src.split, limit=ev.limit, temperature=ev.temperature,
                         max_new_tokens=ev.max_new_tokens, tokenizer=tok, out_dir=out, seed=self.wf.seed,
                         progress=False)
            m = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in m.items()}
            m["greedy_pass@1"] = greedy_pass_at_1(task, engine, split=src.split, limit=ev.limit, tokenizer=tok,
                                                  max_new_tokens=ev.max_new_tokens)
            if ev.env is not None:   # multi-turn: solved within t turns with the environment's feedback
                from rlvr.eval import multiturn_greedy_eval
                m.update(multiturn_greedy_eval(task, engine, ev.env, split=src.split, limit=ev.limit, tokenizer=tok,
                                               max_new_tokens=ev.max_new_tokens))
        finally:
            engine.close()
        atomic_write_json(marker, {"fingerprint": key, "metrics": m})
        return m


def _fp(cfg) -> dict[str, Any]:
    """A config's fingerprint input: only the values that differ from the defaults, so a release that adds a
    config field (with a default) does not invalidate finished stages of existing runs."""
    return cfg.model_dump(exclude_defaults=True)


HEADLINE = re.compile(r"^(pass|maj)@\d+$")   # pass@k / maj@k (not pass^k or the subset-averaged maj@k_avg)


def _headline(ev: dict[str, Any]) -> dict[str, Any]:
    """Eval numbers put into a stage's metrics: pass@1 is greedy (as in `rlvr train`), the rest sampled."""
    out = {"pass@1": ev.get("greedy_pass@1"), "sampled_pass@1": ev.get("pass@1")}
    out.update({k: v for k, v in ev.items() if HEADLINE.match(k) and k != "pass@1" and isinstance(v, (int, float))})
    if "multiturn_pass@1" in ev:   # greedy, solved within the env's max_turns (eval.env)
        out["multiturn_pass@1"] = ev["multiturn_pass@1"]
    return out


def run_workflow(wf: Workflow, *, recipe_path: str | None = None, log: Callable[[str], None] = print) -> dict:
    return WorkflowRunner(wf, recipe_path=recipe_path, log=log).run()
