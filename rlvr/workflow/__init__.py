"""Multi-stage runs (`rlvr run`): a DAG of stages (sft, grpo, ppo, dpo, rejection_sampling, rm, prm, eval) with
lineage, resumption and a report. See spec.py for the file format and runner.py for the run layout."""
from rlvr.workflow.spec import Workflow, load_workflow

__all__ = ["Workflow", "load_workflow", "run_workflow"]


def run_workflow(*args, **kwargs):
    from rlvr.workflow.runner import run_workflow as _run
    return _run(*args, **kwargs)
