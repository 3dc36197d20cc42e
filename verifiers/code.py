"""`code`: run the task's tests against the Python program in a response, inside the sandbox (`sandbox/`).

    CodeVerifier(reward="binary" | "fraction", timeout_s=3.0, memory_mb=512, fenced_only=False, backend="local")

Extraction: the last fenced block (``` or ~~~) tagged python/py/python3/py3 or untagged; an unclosed final
fence (a generation cut off by the token limit) counts up to the end. Blocks in other languages are ignored.
Without any fence the whole response is taken as code when it compiles (alone or after the task's `prefix`),
unless `fenced_only`. Nothing usable -> `unparseable`.

What the task supplies (in `ctx.example`, else `ctx.gold`):
- `tests`: list of independent test snippets (MBPP's asserts); else `ctx.gold` is one test program
  (HumanEval's `check` function followed by `check(entry_point)`).
- `test_setup`: code run after the solution, before the tests (MBPP's `test_setup_code`).
- `prefix` (+ `entry_point`): code placed before the solution (HumanEval's prompt: signature, docstring, imports,
  helpers). A solution that defines `entry_point` itself replaces the prompt's stub; one that does not is a
  completion of the prompt's body.

The program run in the sandbox is a small harness: it execs the solution under `__name__ == "solution"` (so a
demo `if __name__ == "__main__":` block does not run), then each test in turn, and writes
`<tag> <passed> <total> <first failure>` to stderr. `tag` is random per call. The harness goes to the sandbox
as the job's trusted `prelude` (compiled once per sandbox worker); the solution and tests travel in the call. Reward: `binary` = 1 when every
test passed *and* the sandbox saw the program complete (so `sys.exit(0)` / `os._exit(0)` before the tests
cannot pass); `fraction` = passed / total (0 without a complete run).

Status: all tests pass -> correct; a test or the solution fails (assert, exception, crash, memory) -> wrong;
no code -> unparseable; sandbox timeout -> timeout; the sandbox could not run it -> error.
"""
from __future__ import annotations

import json
import re
import secrets
from typing import Any

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["CodeVerifier", "extract_code", "build_program", "harness_parts", "PYTHON_TAGS"]

PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n`]*$")
_REASON_CHARS = 300

_HARNESS = '''
def __rlvr_run(solution, setup, tests, tag, stop_first, _exec=exec, _compile=compile, _len=len,
               _type=type, _str=str, _write=__import__("sys").stderr.write, _dumps=__import__("json").dumps):
    g = globals()
    g["__name__"] = "solution"

    def describe(e):
        try:
            return (_type(e).__name__ + ": " + _str(e))[:300]
        except BaseException:
            return _type(e).__name__

    passed, first, total = 0, "", _len(tests)
    try:
        _exec(_compile(solution, "solution.py", "exec"), g)
        if setup:
            _exec(_compile(setup, "setup.py", "exec"), g)
    except BaseException as e:          # SystemExit included: exiting is not passing
        first = "solution: " + describe(e)
        tests = ()
    for i, src in enumerate(tests):
        try:
            _exec(_compile(src, "test_%d.py" % i, "exec"), g)
            passed += 1
        except BaseException as e:
            first = first or ("test %d: " % i) + describe(e)
            if stop_first:
                break
    _write("\\n%s %d %d %s\\n" % (tag, passed, total, _dumps(first)))

'''


def extract_code(response: str, prefix: str = "", fenced_only: bool = False) -> str | None:
    """The program in a response (see the module docstring), or None."""
    blocks = _fenced_blocks(response)
    if blocks:
        python = [code for lang, code in blocks if lang.lower() in PYTHON_TAGS]
        code = python[-1] if python else None
        return code if code and code.strip() else None
    if fenced_only or not response.strip():
        return None
    for program in (response, prefix + response):
        if _compiles(program):
            return response
    return None


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of every fenced block, in order; one pass over the lines."""
    blocks, lines = [], text.split("\n")
    opened: tuple[str, str, int] | None = None      # (fence, tag, first body line)
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if not m:
            continue
        fence, tag = m.group(1), m.group(2)
        if opened is None:
            opened = (fence, tag, i + 1)
        elif fence[0] == opened[0][0] and len(fence) >= len(opened[0]) and not tag:
            blocks.append((opened[1], "\n".join(lines[opened[2]:i])))
            opened = None
    if opened is not None:                          # unclosed: the generation was cut off
        blocks.append((opened[1], "\n".join(lines[opened[2]:])))
    return blocks


def _compiles(src: str) -> bool:
    try:
        compile(src, "<response>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def build_program(code: str, tests: list[str], *, prefix: str = "", entry_point: str = "", setup: str = "",
                  tag: str, stop_first: bool) -> str:
    """The harness program: solution (after `prefix`), setup, then each test; reports on stderr."""
    return "".join(harness_parts(code, tests, prefix=prefix, entry_point=entry_point, setup=setup, tag=tag,
                                 stop_first=stop_first))


def harness_parts(code: str, tests: list[str], *, prefix: str = "", entry_point: str = "", setup: str = "",
                  tag: str, stop_first: bool) -> tuple[str, str]:
    """`build_program` as (prelude, call): the fixed harness, a sandbox `Job.prelude` (trusted, compiled once
    per sandbox worker), and the call that carries the solution and tests as string literals."""
    if prefix:
        defines = entry_point and re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M)
        solution = prefix + ("\n" + code if defines else code)
    else:
        solution = code
    return _HARNESS, f"__rlvr_run({solution!r}, {setup!r}, {tests!r}, {tag!r}, {stop_first!r})\n"


@register_verifier("code")
class CodeVerifier:
    """Runs the task's tests in the sandbox; see the module docstring."""

    def __init__(self, reward: str = "binary", timeout_s: float = 3.0, memory_mb: int = 512,
                 fenced_only: bool = False, backend: str = "local"):
        if reward not in ("binary", "fraction"):
            raise ValueError(f"code verifier: reward must be 'binary' or 'fraction', got {reward!r}")
        if timeout_s <= 0:
            raise ValueError(f"code verifier: timeout_s must be > 0, got {timeout_s}")
        self.reward, self.timeout_s, self.memory_mb = reward, float(timeout_s), int(memory_mb)
        self.fenced_only, self.backend = bool(fenced_only), backend

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        ex = ctx.example or {}
        tests = list(ex.get("tests") or ([ctx.gold] if ctx.gold else []))
        if not tests:
            return Verdict("error", 0.0, {"reason": "task supplies no tests (ctx.example['tests'] or ctx.gold)"})
        prefix = ex.get("prefix") or ""
        code = extract_code(response, prefix, self.fenced_only)
        if code is None:
            return Verdict("unparseable", 0.0, {"reason": "no Python code found"})
        tag = "RLVR-TESTS-" + secrets.token_hex(8)
        harness, call = harness_parts(code, tests, prefix=prefix, entry_point=ex.get("entry_point") or "",
                                      setup=ex.get("test_setup") or "", tag=tag, stop_first=self.reward == "binary")
        from sandbox import run

        res = run(call, prelude=harness, timeout_s=self.timeout_s, memory_mb=self.memory_mb, backend=self.backend)
        return self._verdict(res, tag, len(tests))

    def _verdict(self, res: Any, tag: str, total: int) -> Verdict:
        passed, first = _report(res.stderr, tag)
        info = {"passed": passed, "total": total, "sandbox": res.status, "wall_s": res.wall_s}
        if res.status == "timeout":
            return Verdict("timeout", 0.0, {**info, "reason": res.reason})
        if res.status == "error":
            return Verdict("error", 0.0, {**info, "reason": res.reason})
        complete = res.completed and res.status == "ok" and passed is not None
        passed = passed if complete else 0
        info["passed"] = passed
        if complete and passed == total:
            return Verdict("correct", 1.0, info)
        reward = passed / total if self.reward == "fraction" else 0.0
        reason = first or (res.reason if res.status != "ok" else "the program did not run to its end")
        return Verdict("wrong", reward, {**info, "reason": reason[:_REASON_CHARS]})


def _report(stderr: str, tag: str) -> tuple[int | None, str]:
    """(passed, first failure) from the harness line carrying `tag`, or (None, "") if it is missing."""
    at = stderr.rfind(tag + " ")
    if at < 0:
        return None, ""
    parts = stderr[at:].split("\n", 1)[0].split(" ", 3)
    try:
        return int(parts[1]), json.loads(parts[3]) if len(parts) > 3 else ""
    except (ValueError, IndexError):
        return None, ""
