"""A seccomp-BPF filter for sandboxed code, assembled by hand (no libseccomp needed).

The filter is built here in the parent and shipped as raw bytes to the zygote, which installs it on itself
with `prctl(PR_SET_SECCOMP)` before it forks any job, so every job process inherits it and cannot remove it.

What it denies (x86_64 only; other architectures get no filter and the layer report says so):
- `socket(domain, ...)` for every domain except AF_UNIX -> EACCES. So no IPv4/IPv6/netlink/packet sockets,
  while asyncio and multiprocessing (which use AF_UNIX socketpairs and pipes) keep working.
- `clone` with any CLONE_NEW* namespace flag -> EPERM; `clone3` -> ENOSYS (its flags live in memory that BPF
  cannot read, so glibc is told to fall back to `clone`).
- kernel-surface syscalls no test needs (`DENIED`): ptrace, mount family, unshare/setns, bpf, keyrings,
  perf_event_open, userfaultfd, io_uring, process_vm_*, module loading, kexec, reboot, ... -> EPERM.
- the x32 ABI (syscall numbers with bit 30 set) -> EPERM; any other audit arch -> the process is killed.

Layout of `struct seccomp_data` read by the filter: nr at offset 0, arch at 4, args[i] at 16 + 8*i (we read
the low 32 bits of args[0], little-endian).
"""
from __future__ import annotations

import errno
import platform
import struct

__all__ = ["DENIED", "build_filter", "supported", "NS_FLAGS"]

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_AF_UNIX = 1

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080

_SOCKET, _CLONE, _CLONE3 = 41, 56, 435
DENIED: dict[str, int] = {   # x86_64 numbers, from asm/unistd_64.h
    "ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155, "adjtimex": 159, "chroot": 161,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442, "memfd_secret": 447,
}


def supported() -> bool:
    """True where `build_filter` knows the syscall numbers (x86_64 Linux)."""
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")


def build_filter() -> bytes:
    """The filter as an array of `struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}` (8 bytes each)."""
    if not supported():
        raise OSError(f"no seccomp filter for {platform.machine()}")
    prog: list[tuple] = [
        ("ld", 4), ("jeq", _AUDIT_ARCH_X86_64, None, "kill"),
        ("ld", 0), ("jge", _X32_BIT, "eperm", None),
        ("jeq", _SOCKET, "socket", None), ("jeq", _CLONE, "clone", None), ("jeq", _CLONE3, "enosys", None),
    ]
    prog += [("jeq", nr, "eperm", None) for nr in sorted(DENIED.values())]
    prog += [
        ("ret", _RET_ALLOW),
        ("label", "socket"), ("ld", 16), ("jeq", _AF_UNIX, "allow", "eacces"),
        ("label", "clone"), ("ld", 16), ("jset", NS_FLAGS, "eperm", "allow"),
        ("label", "allow"), ("ret", _RET_ALLOW),
        ("label", "eperm"), ("ret", _RET_ERRNO | errno.EPERM),
        ("label", "eacces"), ("ret", _RET_ERRNO | errno.EACCES),
        ("label", "enosys"), ("ret", _RET_ERRNO | errno.ENOSYS),
        ("label", "kill"), ("ret", _RET_KILL_PROCESS),
    ]
    return _assemble(prog)


def _assemble(prog: list[tuple]) -> bytes:
    """Two passes: place labels, then encode. A jump target None means "fall through" (offset 0)."""
    labels, index = {}, 0
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = index
        else:
            index += 1
    out, pc = [], 0
    for ins in prog:
        op = ins[0]
        if op == "label":
            continue
        if op == "ld":
            out.append(struct.pack("<HBBI", _LD_W_ABS, 0, 0, ins[1]))
        elif op == "ret":
            out.append(struct.pack("<HBBI", _RET_K, 0, 0, ins[1]))
        else:
            code = {"jeq": _JEQ_K, "jge": _JGE_K, "jset": _JSET_K}[op]
            jt, jf = (0 if t is None else labels[t] - pc - 1 for t in ins[2:4])
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise ValueError(f"seccomp jump out of range at instruction {pc}")
            out.append(struct.pack("<HBBI", code, jt, jf, ins[1]))
        pc += 1
    return b"".join(out)
