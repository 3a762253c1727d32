"""/v1/completions and /v1/chat/completions: OpenAI's request and response shapes (whole
responses, or server-sent events ending with ``data: [DONE]``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse

from .protocol import BadRequest, Limits, chat_messages, prompt_list, sampling_request
from .registry import ServedModel
from .runner import Choice, run_choices, usage


def _completion_logprobs(c: Choice) -> dict | None:
    if c.req.logprobs is None:
        return None
    return {"tokens": [t["token"] for t in c.logprobs],
            "token_logprobs": [t["logprob"] for t in c.logprobs],
            "top_logprobs": [dict(t["top"]) for t in c.logprobs], "text_offset": []}


def _chat_logprobs(entries: list[dict], enabled: bool) -> dict | None:
    if not enabled:
        return None
    item = lambda tok, lp: {"token": tok, "logprob": lp, "bytes": list(tok.encode())}
    return {"content": [item(t["token"], t["logprob"]) | {"top_logprobs": [item(a, b) for a, b
                                                                           in t["top"]]}
                        for t in entries]}


def _jobs(served: ServedModel, body: dict, chat: bool) -> list[tuple[list[int], list[int]]]:
    eos = served.settings.eos_token_ids
    if chat:
        return [served.chat_prompt(chat_messages(body))]
    return [(p if isinstance(p, list) else served.encode(p), eos) for p in prompt_list(body)]


async def generation(served: ServedModel, body: dict, limits: Limits, chat: bool,
                     http: HttpRequest, on_disconnect) -> JSONResponse | StreamingResponse:
    """Answer a completions (``chat=False``) or chat request."""
    if served.engine is None:
        raise BadRequest(f"model {served.name!r} is a {served.kind}; it does not generate text "
                         "(use a decoder model)", param="model")
    s = sampling_request(body, served.lm.meta, limits, chat=chat)
    jobs = _jobs(served, body, chat)
    meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()), "model": served.name,
            "object": "chat.completion" if chat else "text_completion"}
    events = run_choices(served, jobs, s, limits)
    if s.stream:
        first = await _first_event(events)  # a full queue is a 429, not a broken stream
        return StreamingResponse(_sse(events, first, meta, chat, s.include_usage, jobs, http,
                                      on_disconnect), media_type="text/event-stream")
    choices: dict[int, Choice] = {}
    try:
        async for c, _piece in events:
            choices[c.index] = c
            if await http.is_disconnected():
                on_disconnect()
                break
    finally:
        await events.aclose()
    ordered = [choices[i] for i in sorted(choices)]
    return JSONResponse(meta | {"choices": [_whole(c, chat) for c in ordered],
                                "usage": usage(ordered, jobs)})


async def _first_event(events: AsyncIterator):
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


def _whole(c: Choice, chat: bool) -> dict:
    text = "".join(c.pieces)
    if chat:
        return {"index": c.index, "message": {"role": "assistant", "content": text},
                "finish_reason": c.finish, "logprobs": _chat_logprobs(c.logprobs,
                                                                      c.req.logprobs is not None)}
    return {"index": c.index, "text": text, "finish_reason": c.finish,
            "logprobs": _completion_logprobs(c)}


def _chunk(meta: dict, chat: bool, c: Choice, piece: str | None, sent_logprobs: int) -> dict:
    """One SSE chunk: a text piece, or the end of a choice (piece None)."""
    new = c.logprobs[sent_logprobs:]
    if chat:
        delta = {} if piece is None else {"content": piece}
        choice = {"index": c.index, "delta": delta, "finish_reason": c.finish if piece is None
                  else None, "logprobs": _chat_logprobs(new, c.req.logprobs is not None)}
        return meta | {"object": "chat.completion.chunk", "choices": [choice]}
    choice = {"index": c.index, "text": piece or "", "finish_reason": c.finish if piece is None
              else None, "logprobs": None}
    return meta | {"choices": [choice]}


async def _sse(events: AsyncIterator, first, meta: dict, chat: bool, include_usage: bool,
               jobs: list, http: HttpRequest, on_disconnect) -> AsyncIterator[str]:
    seen: dict[int, Choice] = {}
    sent: dict[int, int] = {}
    data = lambda obj: f"data: {json.dumps(obj)}\n\n"
    finished = False
    try:
        if chat:
            yield data(meta | {"object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""},
                 "finish_reason": None}]} | ({"usage": None} if include_usage else {}))
        pending = [first] if first is not None else []
        async for item in _chain(pending, events):
            c, piece = item
            seen[c.index] = c
            yield data(_chunk(meta, chat, c, piece, sent.get(c.index, 0))
                       | ({"usage": None} if include_usage else {}))
            sent[c.index] = len(c.logprobs)
        if include_usage:
            yield data(meta | {"object": "chat.completion.chunk" if chat else meta["object"],
                               "choices": [], "usage": usage(list(seen.values()), jobs)})
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            on_disconnect()
        await events.aclose()


async def _chain(first: list, rest: AsyncIterator):
    for x in first:
        yield x
    async for x in rest:
        yield x
