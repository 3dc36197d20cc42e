"""`rlvr report RUN_DIR`: (re)write RUN_DIR/report.md (lineage, metrics, eval table, curves) of a `rlvr run`."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write the markdown report (lineage, metrics, plots) of a `rlvr run` dir")
    p.add_argument("run_dir", help="the run's output_dir")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.workflow.report import write_run_report
    print(write_run_report(args.run_dir))
    return 0
