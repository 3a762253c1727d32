"""OpenAI request fields, read and checked one by one: a wrong one is a :class:`BadRequest`
naming the field (HTTP 400), never a traceback. Also the server's limits."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..inference.generate import GenerationConfig
from ..inference.settings import effective_sampling


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` with one line saying what to fix."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.headers = status, param, headers or {}

    def body(self) -> dict:
        kind = {400: "invalid_request_error", 401: "authentication_error",
                404: "not_found_error", 429: "rate_limit_error"}.get(self.status, "server_error")
        return {"error": {"message": str(self), "type": kind, "param": self.param,
                          "code": self.status}}


@dataclass
class Limits:
    """What one request may ask of the server."""

    max_tokens: int = 1024
    """The largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 256
    """``max_tokens`` when a request leaves it out (at most ``max_tokens``)."""
    max_n: int = 8
    """The most choices (``n``) per request."""
    max_body_bytes: int = 1 << 20
    """The largest request body."""
    max_inputs: int = 256
    """The most texts per embeddings / classify / translate request."""
    timeout: float = 300.0
    """Seconds a generation may take (queueing included) before it ends with finish reason
    ``timeout``; 0 = no limit."""


def parse_json(raw: bytes, limits: Limits) -> dict:
    if len(raw) > limits.max_body_bytes:
        raise BadRequest(f"the request body is {len(raw)} bytes; the limit is "
                         f"{limits.max_body_bytes}", 413)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
          list: "an array", dict: "an object"}


def get(body: dict, name: str, tp: type, default: Any = None, *, lo: float | None = None,
        hi: float | None = None) -> Any:
    """``body[name]`` checked to be of type ``tp`` (an int is a number) within [lo, hi]."""
    v = body.get(name)
    if v is None:
        return default
    ok = isinstance(v, tp) and not (tp is not bool and isinstance(v, bool))
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise BadRequest(f"'{name}' must be {_NAMES[tp]}, got {json.dumps(v)[:40]}", param=name)
    if tp in (int, float):
        if isinstance(v, float) and not math.isfinite(v):
            raise BadRequest(f"'{name}' must be a finite number", param=name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise BadRequest(f"'{name}' must be between {lo} and {hi}, got {v}", param=name)
    return v


def string_list(body: dict, name: str, *, required: bool = True, most: int = 256) -> list[str]:
    """A string or a list of strings (at least one, at most ``most``)."""
    v = body.get(name)
    if v is None and not required:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
        raise BadRequest(f"'{name}' must be a string or a non-empty array of strings",
                         param=name)
    if len(v) > most:
        raise BadRequest(f"'{name}' has {len(v)} items; at most {most} per request", param=name)
    return v


@dataclass
class Sampled:
    """What a generation request asks for, checked."""

    gen: GenerationConfig
    n: int
    stream: bool
    include_usage: bool
    logprobs: int | None
    user: str | None


def sampling_request(body: dict, meta, limits: Limits, *, chat: bool) -> Sampled:
    """The generation settings of a completions/chat request; sampling left out comes from the
    model's own defaults (meta.json), else lmforge's (:func:`effective_sampling`)."""
    max_tokens = get(body, "max_completion_tokens" if chat and "max_completion_tokens" in body
                     else "max_tokens", int, None, lo=0, hi=limits.max_tokens)
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    s = effective_sampling(meta, temperature=get(body, "temperature", float, lo=0, hi=2),
                           top_p=get(body, "top_p", float, lo=1e-9, hi=1),
                           top_k=get(body, "top_k", int, lo=0),
                           repetition_penalty=get(body, "repetition_penalty", float, lo=1e-6))
    stop = string_list(body, "stop", required=False, most=16)
    gen = s.apply(GenerationConfig(max_new_tokens=max_tokens, seed=get(body, "seed", int),
                                   stop=stop))
    if chat:
        top = get(body, "top_logprobs", int, 0, lo=0, hi=20)
        logprobs = top if get(body, "logprobs", bool, False) else None
    else:
        logprobs = get(body, "logprobs", int, None, lo=0, hi=20)
    options = get(body, "stream_options", dict, {})
    return Sampled(gen, get(body, "n", int, 1, lo=1, hi=limits.max_n),
                   get(body, "stream", bool, False),
                   bool(get(options, "include_usage", bool, False)), logprobs,
                   get(body, "user", str))


def chat_messages(body: dict) -> list[dict]:
    """The ``messages`` array: objects with a role and a string (or text parts) content."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty array of {role, content} objects",
                         param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'",
                             param="messages")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string", param="messages")
        out.append({"role": m["role"], "content": content})
    return out


def prompt_list(body: dict) -> list:
    """The ``prompt`` of a completions request: a string, strings, token ids or lists of
    them; returns a list of str or list[int]."""
    p = body.get("prompt")
    is_ids = lambda x: isinstance(x, list) and x and all(
        isinstance(i, int) and not isinstance(i, bool) for i in x)
    if isinstance(p, str) or is_ids(p):
        return [p]
    if isinstance(p, list) and p and all(isinstance(x, str) or is_ids(x) for x in p):
        return p
    raise BadRequest("'prompt' must be a string, an array of strings, or token ids",
                     param="prompt")
