"""Per-zygote cgroups: a pids limit (the fork-bomb guard that works even where RLIMIT_NPROC does not, e.g. for
root) and a memory limit on all of a job's processes together.

Uses whatever this machine offers, found at start-up from /proc/self/mountinfo and /proc/self/cgroup:
cgroup v1 `pids` / `memory` hierarchies, or a v2 hierarchy whose cgroup already delegates `pids` / `memory`
to its children. New cgroups are made under the caller's own cgroup (so the caller's accounting still holds),
named `rlvr-sandbox-<pid>-<n>`; they need write access there (root, or a delegated subtree). Where none is
writable, `create` returns None and the layer report says so.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["Controller", "CgroupSet", "controllers", "create"]

_PREFIX = "rlvr-sandbox-"
_counter = itertools.count()


@dataclass(frozen=True)
class Controller:
    name: str            # "pids" | "memory"
    version: int         # 1 | 2
    parent: Path         # directory new cgroups are created in (the caller's own cgroup)

    def limit_file(self) -> str:
        return {("pids", 1): "pids.max", ("pids", 2): "pids.max",
                ("memory", 1): "memory.limit_in_bytes", ("memory", 2): "memory.max"}[(self.name, self.version)]


@lru_cache(maxsize=1)
def controllers() -> dict[str, Controller]:
    """Usable controllers by name: the hierarchy exists, our cgroup dir is writable, and (v2) the controller
    is enabled for children. v1 is preferred when both exist (hybrid hosts often have no v2 controllers)."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        own = Path("/proc/self/cgroup").read_text()
    except OSError:
        return {}
    paths_v1, path_v2 = {}, None
    for line in own.splitlines():
        hid, ctrls, path = line.split(":", 2)
        if hid == "0" and not ctrls:
            path_v2 = path
        for c in ctrls.split(","):
            paths_v1[c] = path
    found: dict[str, Controller] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, mnt, fstype, opts = fields[3], Path(fields[4]), rfields[0], rfields[2].split(",")
        for name in ("pids", "memory"):
            if name in found:
                continue
            if fstype == "cgroup" and name in opts and name in paths_v1:
                ctl = Controller(name, 1, _under(mnt, root, paths_v1[name]))
            elif fstype == "cgroup2" and path_v2 is not None:
                ctl = Controller(name, 2, _under(mnt, root, path_v2))
                if name not in _read(ctl.parent / "cgroup.subtree_control").split():
                    continue
            else:
                continue
            if ctl.parent.is_dir() and os.access(ctl.parent, os.W_OK):
                found[name] = ctl
    return found


def _under(mountpoint: Path, mount_root: str, cgroup_path: str) -> Path:
    """Directory of `cgroup_path` (as in /proc/self/cgroup) on a mount of the hierarchy's `mount_root`."""
    rel = os.path.relpath(cgroup_path, mount_root)
    return mountpoint if rel == "." else mountpoint / rel


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class CgroupSet:
    """The cgroups (one per controller) of one zygote and everything it forks."""

    def __init__(self, dirs: dict[str, tuple[Controller, Path]]):
        self.dirs = dirs
        self._memory_mb: int | None = None

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for _, d in self.dirs.values()]

    def set_pids(self, n: int) -> None:
        if "pids" in self.dirs:
            ctl, d = self.dirs["pids"]
            (d / ctl.limit_file()).write_text(str(n))

    def set_memory(self, mb: int) -> None:
        """Total memory of the zygote and its job; written only when it changes."""
        if "memory" not in self.dirs or mb == self._memory_mb:
            return
        ctl, d = self.dirs["memory"]
        files = [d / ctl.limit_file()]
        if ctl.version == 1 and (d / "memory.memsw.limit_in_bytes").exists():
            # swap accounting: the same cap on memory + swap. memsw must stay >= memory, so the order of
            # the two writes depends on whether the limit goes up or down.
            files.append(d / "memory.memsw.limit_in_bytes")
            if self._memory_mb is not None and mb > self._memory_mb:
                files.reverse()
        for f in files:
            try:
                f.write_text(str(mb << 20))
            except OSError:    # e.g. below current usage; the rlimit still caps each process
                pass
        self._memory_mb = mb

    def oom_kills(self) -> int:
        """How many processes the kernel OOM killer has killed in this cgroup so far."""
        if "memory" not in self.dirs:
            return 0
        ctl, d = self.dirs["memory"]
        text = _read(d / ("memory.oom_control" if ctl.version == 1 else "memory.events"))
        m = re.search(r"^oom_kill (\d+)", text, re.M)
        return int(m.group(1)) if m else 0

    def remove(self) -> None:
        for _, d in self.dirs.values():
            try:
                d.rmdir()
            except OSError:
                pass


def create() -> CgroupSet | None:
    """Fresh cgroups for one zygote, or None where no controller is usable."""
    ctls = controllers()
    if not ctls:
        return None
    _remove_stale(ctls)
    name = f"{_PREFIX}{os.getpid()}-{next(_counter)}"
    dirs = {}
    for ctl in ctls.values():
        d = ctl.parent / name
        try:
            d.mkdir()
        except OSError:
            continue
        dirs[ctl.name] = (ctl, d)
    return CgroupSet(dirs) if dirs else None


_cleaned = False


def _remove_stale(ctls: dict[str, Controller]) -> None:
    """Empty cgroups left by processes that died without cleaning up (once per process)."""
    global _cleaned
    if _cleaned:
        return
    _cleaned = True
    for ctl in ctls.values():
        for d in ctl.parent.glob(f"{_PREFIX}*"):
            owner = d.name[len(_PREFIX):].split("-")[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                try:
                    d.rmdir()
                except OSError:
                    pass
