"""Model-based rewards: a trained reward model (RM) as a verifier, and the scoring server that PRMs share.

Why a server: verifiers run in the pool's worker processes (`verifiers.pool`), and loading a torch model in
every worker would multiply memory by the worker count and re-load on every worker replacement. Instead the
model is loaded ONCE, in its own process (`ScoringServer`, on its own `device`), and workers send it
requests over a local socket. Concurrent requests from all workers are coalesced into one forward (up to
`batch_size` items, waiting at most `max_wait_s` for more), so scoring is batched even though the pool asks
one response at a time. The pool's deadline still applies: a worker stuck on a slow server is killed, and the
server drops the reply to the dead connection.

Mixing with rule-based rewards needs nothing new: a Task lists the RM verifier next to the others, e.g.

    verifiers:
      - {name: integer, weight: 1.0}
      - {name: reward_model, weight: 0.2, options: {model: runs/rm/model, device: cuda:1}}

and `Task.score` sums weight · reward as usual. Building the verifier (in the parent) starts the server, or
reuses the one already serving that model; it stops when the parent exits (or dies: it polls its parent).
A caller that already has a batch (a trainer, best-of-N) can skip the pool: `verifier.score_batch(...)`
sends all items in one request, or use `RewardModelScorer` in-process.

Covered / not covered
- covered: only a holder of the per-server random `authkey` can connect (multiprocessing's HMAC handshake);
  the socket lives in a fresh private temp dir.
- not covered: this is a local convenience, not a network service; requests are pickled.

As with any spawned process, a script that builds these verifiers needs an `if __name__ == "__main__":` guard.
"""
from __future__ import annotations

import atexit
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from verifiers.base import Verdict, VerifyContext, register_verifier

__all__ = ["RewardModelScorer", "ScoringServer", "shared_server", "request_scores", "RewardModelVerifier",
           "SCORER_KINDS"]

Item = tuple[str, str]   # (prompt, response)


class RewardModelScorer:
    """A trained RM loaded once in this process. `score(prompts, responses) -> [r]` in length-sorted batches.

    The text scored is the model's saved `template` (default "{prompt}{response}") + EOS, encoded exactly as
    in training (`rlvr.trainers.reward_model.encode_sequence`).
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16, dtype: str = "float32",
                 template: str | None = None, max_length: int | None = None):
        from rlvr.models.value_head import load_value_model

        self.model, self.tokenizer = load_value_model(model, dtype=dtype, expect_kind="reward")
        self.model.to(device).eval()
        self.template = template or self.model.meta.get("template", "{prompt}{response}")
        self.max_length = max_length or int(self.model.meta.get("max_length", 512))
        self.batch_size = batch_size

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        import torch

        from rlvr.trainers.reward_model import encode_sequence, score_texts

        rows = [encode_sequence(self.tokenizer, self.template.format(prompt=p, response=r), self.max_length)
                for p, r in zip(prompts, responses)]
        out = [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        with torch.no_grad():
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                r = score_texts(self.model, [rows[i] for i in idx], self.tokenizer.pad_token_id)
                for i, v in zip(idx, r.float().cpu().tolist()):
                    out[i] = v
        return out

    def score_items(self, items: Sequence[Item]) -> list[list[float]]:
        """Server protocol: one list of floats per (prompt, response) item; here [r]."""
        return [[v] for v in self.score([p for p, _ in items], [r for _, r in items])]


def _prm_scorer(**options: Any):
    from verifiers.prm import PRMScorer
    return PRMScorer(**options)


# kind -> factory(**options) of an object with `score_items(items) -> list[list[float]]`
SCORER_KINDS = {"rm": RewardModelScorer, "prm": _prm_scorer}


# ------------------------------------------------------------------------------------------------ server side
@dataclass
class _Request:
    items: list[Item]
    reply: "queue.Queue[tuple[str, Any]]"


def _serve(kind: str, options: dict[str, Any], address: str, authkey: bytes, ready, batch_size: int,
           max_wait_s: float) -> None:
    """Server process main: load the scorer, then accept connections forever (one thread per connection)."""
    from multiprocessing.connection import Listener

    parent = os.getppid()
    try:
        scorer = SCORER_KINDS[kind](**options)
        listener = Listener(address, family="AF_UNIX", authkey=authkey)
    except Exception as e:  # noqa: BLE001 (any load failure is reported to the parent as one line)
        ready.send(("error", f"{type(e).__name__}: {e}"))
        return
    ready.send(("ok", None))
    requests: queue.Queue[_Request] = queue.Queue()
    threading.Thread(target=_batch_loop, args=(scorer, requests, batch_size, max_wait_s), daemon=True).start()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    while True:
        try:
            conn = listener.accept()
        except Exception:  # noqa: BLE001 (failed handshake / client gone: keep serving)
            continue
        threading.Thread(target=_handle, args=(conn, requests), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:        # re-parented: the process that started us is gone
        time.sleep(1.0)
    os._exit(0)


def _handle(conn, requests: "queue.Queue[_Request]") -> None:
    with conn:
        try:
            items = conn.recv()
            if not (isinstance(items, list) and all(isinstance(i, tuple) and len(i) == 2
                                                    and all(isinstance(s, str) for s in i) for i in items)):
                conn.send(("error", "expected a list of (prompt, response) string pairs"))
                return
            reply: queue.Queue = queue.Queue(1)
            requests.put(_Request(items, reply))
            conn.send(reply.get())
        except (EOFError, OSError):      # the client was killed (pool deadline): nobody to answer
            pass


def _batch_loop(scorer: Any, requests: "queue.Queue[_Request]", batch_size: int, max_wait_s: float) -> None:
    """Coalesce concurrent requests: take one, then more until batch_size items or max_wait_s passed."""
    while True:
        batch = [requests.get()]
        n, deadline = len(batch[0].items), time.monotonic() + max_wait_s
        while n < batch_size:
            try:
                batch.append(requests.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            n += len(batch[-1].items)
        try:
            out, err = scorer.score_items([it for r in batch for it in r.items]), None
        except Exception as e:  # noqa: BLE001 (reported to every waiting client)
            out, err = None, f"{type(e).__name__}: {e}"
        pos = 0
        for r in batch:
            r.reply.put(("error", err) if err else ("ok", out[pos:pos + len(r.items)]))
            pos += len(r.items)


# ------------------------------------------------------------------------------------------------ parent side
class ScoringServer:
    """A scorer (`SCORER_KINDS[kind](**options)`) in its own spawned process, reachable at `address`.

    options: the scorer's constructor arguments (`model`, `device`, `batch_size`, ...). Blocks until the model
    is loaded (or raises RuntimeError with the child's one-line error after `start_timeout` s).
    """

    def __init__(self, kind: str, options: dict[str, Any], *, batch_size: int = 16, max_wait_s: float = 0.005,
                 start_timeout: float = 600.0):
        import multiprocessing

        if kind not in SCORER_KINDS:
            raise KeyError(f"unknown scorer kind {kind!r}; known: {', '.join(SCORER_KINDS)}")
        model = str(options.get("model", ""))
        if (os.path.isabs(model) or model.startswith((".", "~"))) and not os.path.isdir(os.path.expanduser(model)):
            raise RuntimeError(f"{kind} scoring server: model {model!r} is not a directory")   # fail before spawning
        self._dir = tempfile.mkdtemp(prefix="rlvr-score-")
        self.address = os.path.join(self._dir, "sock")
        self.authkey = os.urandom(32)
        ctx = multiprocessing.get_context("spawn")     # a fresh interpreter: no inherited torch threads
        here, there = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_serve, args=(kind, dict(options), self.address, self.authkey, there,
                                                      batch_size, max_wait_s), daemon=True, name=f"rlvr-{kind}")
        self._proc.start()
        there.close()
        if not here.poll(start_timeout):
            self.close()
            raise RuntimeError(f"{kind} scoring server did not start within {start_timeout:g}s")
        try:
            status, msg = here.recv()
        except EOFError:
            status, msg = "error", f"process exited with code {self._proc.exitcode}"
        if status != "ok":
            self.close()
            raise RuntimeError(f"{kind} scoring server for {options.get('model')!r} failed: {msg}")

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def score(self, items: Sequence[Item]) -> list[list[float]]:
        return request_scores(self.address, self.authkey, items)

    def close(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "ScoringServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def request_scores(address: str, authkey: bytes, items: Sequence[Item],
                   timeout: float | None = None) -> list[list[float]]:
    """Send (prompt, response) items to a server; one list of floats per item. Raises on failure, and
    TimeoutError when no reply comes within `timeout` seconds (None: wait; the pool's deadline applies)."""
    from multiprocessing.connection import Client

    with Client(address, family="AF_UNIX", authkey=authkey) as conn:
        conn.send([(str(p), str(r)) for p, r in items])
        if timeout is not None and not conn.poll(timeout):
            raise TimeoutError(f"scoring server gave no reply within {timeout:.0f} s")
        status, payload = conn.recv()
    if status != "ok":
        raise RuntimeError(f"scoring server: {payload}")
    return payload


_SERVERS: dict[tuple, ScoringServer] = {}
_SERVERS_LOCK = threading.Lock()


def shared_server(kind: str, **options: Any) -> ScoringServer:
    """The server for (kind, options) in this process, started on first use and reused afterwards."""
    batch_size = int(options.get("batch_size", 16))
    key = (kind, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None or not server.alive:
            server = _SERVERS[key] = ScoringServer(kind, options, batch_size=batch_size)
        return server


@atexit.register
def _close_servers() -> None:
    for server in list(_SERVERS.values()):
        server.close()
    _SERVERS.clear()


# --------------------------------------------------------------------------------------------------- verifier
@register_verifier("reward_model")
class RewardModelVerifier:
    """A trained reward model r(x, y) as a verifier. reward = σ(r / temperature) ("sigmoid") or r ("raw");
    status "correct" when σ(r / temperature) >= threshold, else "wrong"; info: {"score": r}.

    Options: `model` (a dir written by `rlvr train-rm`), `device` of the scoring server, `batch_size`,
    `transform`, `temperature`, `threshold`. The prompt scored is `ctx.prompt` (the task's question).
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16,
                 transform: Literal["sigmoid", "raw"] = "sigmoid", temperature: float = 1.0,
                 threshold: float = 0.5) -> None:
        if transform not in ("sigmoid", "raw"):
            raise ValueError(f"bad options for verifier 'reward_model': transform must be sigmoid or raw, "
                             f"got {transform!r}")
        if temperature <= 0:
            raise ValueError("bad options for verifier 'reward_model': temperature must be > 0")
        server = shared_server("rm", model=model, device=device, batch_size=batch_size)
        self.address, self.authkey = server.address, server.authkey      # all a worker needs (picklable)
        self.transform, self.temperature, self.threshold = transform, temperature, threshold

    def _verdict(self, r: float) -> Verdict:
        p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, r / self.temperature))))
        reward = p if self.transform == "sigmoid" else r
        return Verdict("correct" if p >= self.threshold else "wrong", reward, {"score": r})

    def __call__(self, response: str, ctx: VerifyContext) -> Verdict:
        try:
            [[r]] = request_scores(self.address, self.authkey, [(ctx.prompt, response)])
        except Exception as e:  # noqa: BLE001 (server gone or failing: an error verdict, never a raise)
            return Verdict("error", 0.0, {"reason": f"{type(e).__name__}: {e}"[:300]})
        return self._verdict(r)

    def score_batch(self, responses: Sequence[str], contexts: Sequence[VerifyContext],
                    timeout: float | None = None) -> list[Verdict]:
        """All items in one request (no pool): for trainers and best-of-N that already hold a batch."""
        scores = request_scores(self.address, self.authkey, [(c.prompt, r) for r, c in zip(responses, contexts)],
                                timeout=timeout)
        return [self._verdict(s[0]) for s in scores]
