"""`rlvr` command line: a thin dispatcher. Each subcommand lives in `rlvr/commands/<name>.py` and defines
`register(subparsers)` (adds its parser, sets `func`) — add a file there to add a command.

User errors (RLVRError, unknown task, bad config) print one line and exit 2; no traceback wall.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import rlvr.commands
from rlvr.errors import RLVRError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description="verifiable-reward RL engine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(rlvr.commands.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"rlvr.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os
    # transformers' per-load "Loading weights" / "Writing model shards" bars drown the training progress.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":   # already imported
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (RLVRError, KeyError, ValueError, FileNotFoundError) as e:
        if isinstance(e, (KeyError, ValueError, FileNotFoundError)) and not _is_user_error(e):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"rlvr {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _is_user_error(e: BaseException) -> bool:
    # Registry misses (unknown task/verifier) and bad options are raised as KeyError/ValueError with a
    # complete message by our own code; anything else is a bug and keeps its traceback.
    from tasks.registry import UnknownTaskError
    return isinstance(e, (UnknownTaskError, FileNotFoundError)) or getattr(e, "user_facing", False) or \
        (bool(e.args) and isinstance(e.args[0], str) and e.args[0].startswith(("unknown ", "bad options")))


if __name__ == "__main__":
    sys.exit(main())
