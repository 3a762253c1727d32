"""One HTTP request's generations (its ``n`` choices per prompt) on the engine, as an async
stream of events for the route to format (whole responses or SSE chunks).

The engine thread hands events over with ``loop.call_soon_threadsafe``; leaving the stream
early (a client that went away, an exception) cancels every choice, so its slot is freed at
the next decoding step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from .engine import QueueFull, Request
from .protocol import BadRequest, Limits, Sampled
from .registry import ServedModel
from .textstream import TextStream


@dataclass
class Choice:
    """One generated answer: its request, text so far, token log-probabilities, end."""

    index: int
    prompt: int
    """Which prompt (of a request with several) it answers."""
    req: Request
    text: TextStream
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    finish: str | None = None
    first_token_at: float | None = None


def make_choices(served: ServedModel, jobs: list[tuple[list[int], list[int]]], s: Sampled,
                 limits: Limits, sink_for) -> list[Choice]:
    """``n`` choices per (prompt ids, stop ids) job; a prompt that does not fit is refused.
    Seeded choices get seeds seed, seed + 1, ..."""
    ctx = served.engine.context  # None: no limit (a Transformer-XL model)
    choices = []
    deadline = time.monotonic() + limits.timeout if limits.timeout else None
    for p, (ids, eos) in enumerate(jobs):
        if not ids:
            raise BadRequest("the prompt is empty; give at least one token", param="prompt")
        if ctx is not None and len(ids) >= ctx:
            raise BadRequest(f"the prompt is {len(ids)} tokens but the model's context is {ctx} "
                             "tokens; shorten it", param="prompt")
        for k in range(s.n):
            i = len(choices)
            seed = None if s.gen.seed is None else s.gen.seed + k
            most = s.gen.max_new_tokens if ctx is None else min(s.gen.max_new_tokens, ctx - len(ids))
            gen = replace(s.gen, seed=seed, max_new_tokens=most)
            req = Request(list(ids), gen, list(eos), sink_for(i), s.logprobs, deadline)
            choices.append(Choice(i, p, req, TextStream(served.lm.tokenizer, gen.stop)))
    return choices


def _token_info(served: ServedModel, tok: int, info: dict | None) -> dict | None:
    if info is None:
        return None
    name = lambda t: served.lm.tokenizer.decode([t], skip_special_tokens=False)
    return {"token": name(tok), "logprob": info["logprob"],
            "top": [(name(t), lp) for t, lp in info["top"]]}


async def run_choices(served: ServedModel, jobs: list[tuple[list[int], list[int]]], s: Sampled,
                      limits: Limits) -> AsyncIterator[tuple[Choice, str | None]]:
    """Yield (choice, text piece) as tokens arrive and (choice, None) when a choice ends."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    sink_for = lambda i: (lambda ev: loop.call_soon_threadsafe(events.put_nowait, (i, ev)))
    choices = make_choices(served, jobs, s, limits, sink_for)
    try:
        for c in choices:
            try:
                served.engine.submit(c.req)
            except QueueFull as e:
                raise BadRequest(str(e), 429, headers={"Retry-After": "1"}) from None
        pending = len(choices)
        while pending:
            i, ev = await events.get()
            c = choices[i]
            if ev[0] == "token":
                c.first_token_at = c.first_token_at or time.monotonic()
                piece = c.text.push(ev[1])
                if c.text.stopped:
                    c.req.cancel()
                if (info := _token_info(served, ev[1], ev[2])) is not None:
                    c.logprobs.append(info)
                if piece:
                    c.pieces.append(piece)
                    yield c, piece
            elif ev[0] == "done":
                if (rest := c.text.flush()):
                    c.pieces.append(rest)
                    yield c, rest
                c.finish = "stop" if c.text.stopped or ev[1] == "stop" else ev[1]
                pending -= 1
                yield c, None
            else:
                raise RuntimeError(f"generation failed: {ev[1]}")
    finally:
        for c in choices:
            c.req.cancel()


def usage(choices: list[Choice], jobs: list) -> dict:
    prompt = sum(len(ids) for ids, _ in jobs)
    done = sum(len(c.req.generated) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
