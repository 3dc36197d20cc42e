"""`rlvr run` end to end on the tiny model: every R1 stage kind, lineage, skipping, stale stages, the report,
and resumption after kill -9 between and inside stages."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.workflow.runner import run_workflow
from rlvr.workflow.spec import load_workflow

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@pytest.mark.slow
def test_tiny_r1_run_end_to_end_then_skip_then_stale(tmp_path):
    out = tmp_path / "run"
    wf = load_workflow(HERE / "tiny_run.yaml", [f"output_dir={out}"])
    summary = run_workflow(wf, log=lambda m: None)
    assert summary["status"] == "complete"
    rows = {s["name"]: s for s in summary["stages"]}
    assert [s["name"] for s in summary["stages"]] == ["cold_start", "reasoning_rl", "rejection", "rm", "sft_all",
                                                       "rl_all", "final"]
    assert all(s["status"] == "complete" for s in summary["stages"])
    for name in ("cold_start", "reasoning_rl", "sft_all", "rl_all"):        # policy stages are evaluated
        assert 0.0 <= rows[name]["metrics"]["pass@1"] <= 1.0 and "pass@4" in rows[name]["metrics"]
    assert "pass@1" in rows["final"]["metrics"] and "eval" not in rows["rm"]

    # rejection sampling: kept samples verify, carry provenance, and pairs put a pass above a failure
    rs = rows["rejection"]
    sft = [json.loads(line) for line in Path(rs["datasets"]["sft"]).read_text().splitlines()]
    pairs = [json.loads(line) for line in Path(rs["datasets"]["pairs"]).read_text().splitlines()]
    assert rs["metrics"]["kept"] == len(sft) > 0 and rs["metrics"]["pairs"] == len(pairs) > 0
    for rec in sft:
        a, b = (int(x) for x in rec["question"].split(" + "))
        assert rec["completion"] == f"<answer>{a + b}</answer>"
        assert rec["stage"] == "rejection" and rec["model"].endswith("reasoning_rl/model") and rec["source"]
    assert len({r["example_id"] for r in sft}) == len(sft)        # keep_per_prompt: 1
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    assert rows["sft_all"]["metrics"]["examples"] == len(sft) + 40  # RS data + the 40 labelled examples

    # per-source reward routing in the mixed RL stage: both judges logged
    last = json.loads((out / "stages/rl_all/grpo_metrics.jsonl").read_text().splitlines()[-1])
    assert "reward/reward_model" in last and "reward/integer" in last

    manifest = json.loads((out / "manifest.json").read_text())
    assert ["rejection", "rm"] in manifest["edges"] and ["rm", "rl_all"] in manifest["edges"]
    st = manifest["stages"]["sft_all"]
    assert st["inputs"]["model"]["ref"] == "base" and st["inputs"]["data"][0]["fingerprint"] == \
        manifest["stages"]["rejection"]["fingerprint"]
    report = (out / "report.md").read_text()
    assert "## Lineage" in report and "rejection -.->|pairs| rm" in report and "| rl_all |" in report
    assert (out / "eval.png").exists() and (out / "curves_rl_all.png").exists()

    # a second invocation skips everything and reports the same numbers
    logs: list[str] = []
    again = run_workflow(load_workflow(HERE / "tiny_run.yaml", [f"output_dir={out}"]), log=logs.append)
    assert sum("already complete" in m for m in logs) == 7
    assert [s["metrics"] for s in again["stages"]] == [s["metrics"] for s in summary["stages"]]

    # changing one stage re-runs it and everything downstream; its old outputs are kept aside
    logs.clear()
    run_workflow(load_workflow(HERE / "tiny_run.yaml", [f"output_dir={out}", "stages.sft_all.config.max_steps=21"]),
                 log=logs.append)
    skipped = {m.split(":")[0] for m in logs if "already complete" in m}
    assert skipped == {"cold_start", "reasoning_rl", "rejection", "rm"}
    assert (out / "stages" / "sft_all.stale-1" / "DONE.json").exists()


def _launch(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlvr.cli", "run", str(HERE / "two_stage.yaml"),
                             f"output_dir={out}"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.time() - t0 < timeout
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finals(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    drop = ("time/", "perf/", "wall_s", "verify/")
    trained = {}
    for stage, kind in (("sft", "sft"), ("rl", "grpo")):
        rows = [json.loads(x) for x in (out / "stages" / stage / f"{kind}_metrics.jsonl").read_text().splitlines()]
        trained[stage] = [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows]
    return {"evals": [s.get("eval") and {k: v for k, v in s["eval"].items() if not k.startswith(drop)
                                         and k != "out_dir"} for s in summary["stages"]], "trained": trained}


@pytest.mark.slow
def test_kill_between_and_inside_stages_gives_the_uninterrupted_result(tmp_path):
    ref = tmp_path / "ref"
    proc = _launch(ref)
    assert proc.wait(timeout=600) == 0
    out = tmp_path / "killed"
    ckpts = out / "stages" / "sft" / "checkpoints"
    # 1) inside stage 1, once its second checkpoint exists
    _kill_when(_launch(out), lambda: ckpts.exists() and len([p for p in ckpts.iterdir() if p.name.startswith("step")]) >= 2)
    assert not (out / "stages" / "sft" / "DONE.json").exists()
    # 2) between stages: as soon as stage 1 is marked complete
    _kill_when(_launch(out), lambda: (out / "stages" / "sft" / "DONE.json").exists())
    # 3) inside stage 2, after a few GRPO steps
    rl_ckpts = out / "stages" / "rl" / "checkpoints"
    _kill_when(_launch(out), lambda: rl_ckpts.exists() and len([p for p in rl_ckpts.iterdir() if p.name.startswith("step")]) >= 2)
    proc = _launch(out)
    assert proc.wait(timeout=600) == 0
    assert _finals(out) == _finals(ref)


def test_rlaif_stage_feeds_dpo_and_sft(tmp_path):
    out = tmp_path / "cai"
    repo = HERE.parents[1]
    wf = load_workflow(HERE / "rlaif_run.yaml", [f"output_dir={out}",
                                                 f"stages.cai.config.constitution={repo / 'recipes/constitution.yaml'}"])
    summary = run_workflow(wf, log=lambda m: None)
    rows = {s["name"]: s for s in summary["stages"]}
    assert summary["status"] == "complete"
    cai = rows["cai"]
    assert set(cai["datasets"]) == {"sft", "pairs", "judged"} and cai["metrics"]["prompts"] == 6
    pairs = [json.loads(x) for x in Path(cai["datasets"]["pairs"]).read_text().splitlines()]
    judged = [json.loads(x) for x in Path(cai["datasets"]["judged"]).read_text().splitlines()]
    assert len(pairs) == cai["metrics"]["revised"] and all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(0.5 < j["confidence"] <= 1.0 and j["principle"] for j in judged)
    assert rows["dpo"]["metrics"]["pairs"] == len(judged) and rows["sft"]["metrics"]["examples"] == len(pairs)


def test_a_failing_stage_is_recorded_and_is_one_error_line(tmp_path, capsys):
    """A barely-trained policy passes no rejection-sampling check, so the RM stage has no pairs: the CLI prints
    one error line, summary.json marks the stage failed and the rest pending, and the report is still written."""
    from rlvr.cli import main

    out = tmp_path / "fail"
    rc = main(["run", str(HERE / "tiny_run.yaml"), f"output_dir={out}", "stages.cold_start.config.max_steps=1",
               "stages.reasoning_rl.config.steps=1", "eval.source=null"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("rlvr run: error:") and "no training groups" in err[0]
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert summary["status"] == "failed" and status["rejection"] == "complete" and status["rm"] == "failed"
    assert status["sft_all"] == status["rl_all"] == status["final"] == "pending"
    assert "failed" in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["rm"]["status"] == "failed" and "no training groups" in manifest["stages"]["rm"]["error"]
