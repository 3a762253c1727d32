"""The decoding engine: one scheduler thread runs the model for every request at once
(continuous batching).

Each iteration admits waiting requests (each prompt is prefilled alone, batch 1, and its
first token sampled: exactly what :func:`lmforge.inference.generate_tokens` does), then runs
one decoding step for all running rows together (:class:`lmforge.serve.batch.BatchCache`; a
Transformer-XL model's rows keep their own segment memories instead:
:class:`lmforge.serve.segment_rows.SegmentRows`, :func:`running_rows`); a
row that finished (end token, its token limit, the context, a cancel or its deadline) leaves
the batch before the next step. Each row samples with its own settings and its own seeded
generator, so greedy and seeded output is what the request would get alone.

Results go to each request's ``sink(event)``, called on the engine thread: ``("token", id,
logprob info or None)`` for each token, then ``("done", finish_reason)``, or ``("error",
message)``. The server hands events over to its event loop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import GenerationError
from ..inference.generate import GenerationConfig
from ..inference.sampling import penalize_repetition, sample_next
from .batch import BatchCache
from .segment_rows import SegmentRows


def running_rows(model: nn.Module) -> BatchCache | SegmentRows:
    """The running-rows keeper for ``model``: a shared KV cache, or per-row XL memories."""
    return SegmentRows(model) if getattr(model.cfg, "memory_length", 0) > 0 else BatchCache(model)


class QueueFull(GenerationError):
    """The waiting queue holds ``max_queue`` requests: try again later (HTTP 429)."""


@dataclass
class Request:
    """One generation: prompt ids, settings, stop ids and where its events go."""

    ids: list[int]
    gen: GenerationConfig
    eos: list[int] = field(default_factory=list)
    sink: Callable[[tuple], None] = lambda event: None
    logprobs: int | None = None
    """Alternatives to report per token (0 = only the chosen token's logprob; None = none)."""
    deadline: float | None = None
    """time.monotonic() after which the request is ended (finish reason ``timeout``)."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    history: torch.Tensor | None = None  # (1, T): prompt + output, for the repetition penalty
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Stop generating (a client went away, a stop string was found): the slot is freed
        at the next step."""
        self.cancelled.set()


@dataclass
class EngineStats:
    """Counters for /metrics (read without a lock: single writers, approximate is fine)."""

    tokens_generated: int = 0
    prompt_tokens: int = 0
    steps: int = 0
    finished: dict[str, int] = field(default_factory=dict)


class Engine:
    """Continuous batching over ``model`` (a causal LM) on a background thread."""

    def __init__(self, model: nn.Module, *, max_batch: int = 8, max_queue: int = 64):
        self.model = model
        self.max_batch, self.max_queue = max_batch, max_queue
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.running: list[Request] = []
        self.batch = running_rows(model)
        self.next_tokens = torch.zeros(0, dtype=torch.long)  # (B,) the tokens to feed next
        self.stats = EngineStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lmforge-engine", daemon=True)
        self._thread.start()

    @property
    def context(self) -> int | None:
        """Most tokens of prompt + output; None: unlimited (a Transformer-XL model)."""
        return self.model.cfg.context_length if self.batch.bounded else None

    @property
    def queue_depth(self) -> int:
        return self.waiting.qsize()

    @property
    def running_slots(self) -> int:
        return len(self.running)

    def submit(self, req: Request) -> Request:
        """Queue a request; :class:`QueueFull` when ``max_queue`` are waiting already."""
        if not req.ids:
            raise GenerationError("the prompt is empty; give at least one token")
        if self.context is not None and len(req.ids) >= self.context:
            raise GenerationError(f"the prompt is {len(req.ids)} tokens but the model's context "
                                  f"is {self.context} tokens; shorten the prompt")
        if self.waiting.qsize() >= self.max_queue:
            raise QueueFull(f"the server's queue is full ({self.max_queue} requests waiting); "
                            "retry later")
        self.waiting.put(req)
        self._wake.set()
        return req

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the thread; waiting and running requests end with finish reason ``shutdown``."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    # -- the scheduler thread ------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            try:
                self._admit()
                if self.running:
                    self._decode()
                else:
                    self._wake.wait(0.05)
                    self._wake.clear()
            except Exception as e:  # noqa: BLE001 - every request must hear about it
                self._fail_all(f"{type(e).__name__}: {e}")
        self._fail_all(None)

    def _fail_all(self, message: str | None) -> None:
        reqs = self.running + _drain(self.waiting)
        self.running, self.batch = [], running_rows(self.model)
        self.next_tokens = torch.zeros(0, dtype=torch.long)
        for r in reqs:
            r.sink(("done", "shutdown") if message is None else ("error", message))

    def _admit(self) -> None:
        while len(self.running) < self.max_batch and not self._stop.is_set():
            try:
                req = self.waiting.get_nowait()
            except queue.Empty:
                return
            if req.cancelled.is_set():
                self._finish(req, "cancelled")
                continue
            self._prefill(req)

    def _prefill(self, req: Request) -> None:
        """Run the prompt alone, pick the first token; join the batch unless done."""
        device = next(self.model.parameters()).device
        idx = torch.tensor([req.ids], dtype=torch.long, device=device)  # (1, T)
        req.history = idx
        if req.gen.seed is not None:
            req.generator = torch.Generator(device=device)
            req.generator.manual_seed(req.gen.seed)
        if req.gen.max_new_tokens == 0:
            return self._finish(req, "length")
        logits, state = self.batch.prefill(idx)  # (1, V), a KV cache or an XL memory
        self.stats.prompt_tokens += len(req.ids)
        tok = self._pick(req, logits[0])
        reason = self._emit(req, tok, logits[0])
        if reason:
            return self._finish(req, reason)
        self.batch.add(state)
        self.running.append(req)
        self.next_tokens = torch.cat([self.next_tokens, torch.tensor([tok])])

    def _decode(self) -> None:
        logits = self.batch.step(self.next_tokens)  # (B, V)
        self.stats.steps += 1
        keep, nxt = [], []
        for i, req in enumerate(self.running):
            tok = self._pick(req, logits[i])
            reason = self._emit(req, tok, logits[i])
            if reason:
                self._finish(req, reason)
            else:
                keep.append(i)
                nxt.append(tok)
        self.running = [self.running[i] for i in keep]
        self.batch.keep(keep)
        self.next_tokens = torch.tensor(nxt, dtype=torch.long)

    def _pick(self, req: Request, logits: torch.Tensor) -> int:
        """Sample one row's next token with its own settings, as generate_tokens does."""
        g = req.gen
        row = penalize_repetition(logits[None], req.history, g.repetition_penalty)
        tok = int(sample_next(row, g.temperature, g.top_k, g.top_p, req.generator)[0])
        req.history = torch.cat([req.history, req.history.new_tensor([[tok]])], dim=1)
        return tok

    def _emit(self, req: Request, tok: int, logits: torch.Tensor) -> str | None:
        """Send the token; the finish reason if the request ends with it."""
        if req.cancelled.is_set():
            return "cancelled"
        if req.deadline is not None and time.monotonic() > req.deadline:
            return "timeout"
        if req.gen.stop_at_eos and tok in req.eos:
            return "stop"
        self.stats.tokens_generated += 1
        req.generated.append(tok)
        req.sink(("token", tok, _logprob_info(logits, tok, req.logprobs)))
        if len(req.generated) >= req.gen.max_new_tokens or (
                self.context is not None and len(req.ids) + len(req.generated) >= self.context):
            return "length"
        return None

    def _finish(self, req: Request, reason: str) -> None:
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
        req.sink(("done", reason))


def _logprob_info(logits: torch.Tensor, tok: int, top: int | None) -> dict | None:
    """The chosen token's log-probability and the ``top`` most likely alternatives."""
    if top is None:
        return None
    logp = logits.float().log_softmax(-1)  # (V,)
    info = {"logprob": float(logp[tok]), "top": []}
    if top > 0:
        values, ids = logp.topk(top)
        info["top"] = [(int(i), float(v)) for v, i in zip(values, ids)]
    return info


def _drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out
