"""Lineage: what made what. Stage fingerprints (config + inputs, recursively), the code version, and the
run manifest (`<output_dir>/manifest.json`), rewritten atomically after every stage event."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from rlvr.trainers.checkpoint import atomic_write_json


def digest(obj: Any) -> str:
    """Short stable hash of a JSON-able object (sorted keys): equal configs → equal digests."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version() -> dict[str, Any]:
    """The git commit of the code that runs (and whether the tree had local changes), when in a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit or None, "git_dirty": dirty if commit else None}


class Manifest:
    """`manifest.json`: run-level facts plus one entry per stage (kind, status, fingerprint, inputs, outputs,
    seed, times). Stage entries are updated in place; the file is always complete JSON (atomic writes)."""

    def __init__(self, path: Path, run: dict[str, Any], *, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled     # enabled: this process writes (rank 0)
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data: dict[str, Any] = {**old, **run, "stages": old.get("stages", {})}
        self.data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.data.setdefault("invocations", [])
        self.data["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), **code_version()})
        self.save()

    def stage(self, name: str, **fields: Any) -> None:
        self.data["stages"].setdefault(name, {}).update(fields)
        self.save()

    def save(self) -> None:
        if not self.enabled:
            return
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.path, self.data)
