"""Resource limits for rendering chat templates, which come with downloaded models and so are
untrusted: Jinja2's sandbox keeps a template from reaching Python's internals, these keep it
from allocating without bound or running for minutes.

* ``*`` (string/list repetition) results are capped at :data:`MAX_REPEAT` characters/items,
  ``+`` and ``~`` (concatenation) results and every function, method or filter result at
  :data:`MAX_STRING`; integer arguments of calls and filters at :data:`MAX_INT_ARG`;
  ``**`` and ``*`` on integers at :data:`MAX_INT_BITS` bits.
* ``range()`` is Jinja2's sandboxed one (at most 100,000 items); every ``for`` loop's
  iterations count towards :data:`MAX_ITERATIONS` per render.
* A render stops after :data:`TIME_LIMIT_S` seconds (checked at every call, filter and loop
  iteration) or once its output passes :data:`MAX_OUTPUT` characters.

Breaking a limit raises ``jinja2.sandbox.SecurityError``, which :func:`render_chat` turns into
one ConfigError. Real templates (SmolLM2's, Llama's, Qwen's) stay far inside every limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sized
from contextvars import ContextVar
from functools import wraps

from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_REPEAT = 2**20
MAX_STRING = 16 * 2**20
MAX_OUTPUT = 16 * 2**20
MAX_INT_ARG = 2**20
MAX_INT_BITS = 4096
MAX_ITERATIONS = 1_000_000
TIME_LIMIT_S = 5.0


class Budget:
    """What one render may still spend (a deadline and a loop-iteration count)."""

    def __init__(self, seconds: float = TIME_LIMIT_S):
        self.deadline = time.monotonic() + seconds
        self.iterations = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"the template ran longer than {TIME_LIMIT_S:g} s")


_BUDGET: ContextVar[Budget | None] = ContextVar("chat_template_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _sized(value: object, limit: int, what: str) -> object:
    if isinstance(value, (str, bytes, list, tuple, dict, set)) and len(value) > limit:
        raise SecurityError(f"{what} would be {len(value):,} long (the limit is {limit:,})")
    return value


def _check_args(args: Iterable, kwargs: dict) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_INT_ARG:
            raise SecurityError(f"a call was given the number {a} (the limit is {MAX_INT_ARG:,})")


def _mul(left, right):
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            if len(seq) * max(n, 0) > MAX_REPEAT:
                raise SecurityError(f"'*' would repeat {len(seq):,} items {n:,} times "
                                    f"(the limit is {MAX_REPEAT:,})")
    return _int_bits(left * right)


def _pow(left, right):
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1 \
            and right * math.log2(abs(left)) > MAX_INT_BITS:
        raise SecurityError(f"{left} ** {right} is too large")
    return left ** right


def _int_bits(value):
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"an integer of {value.bit_length()} bits is too large")
    return value


def _add(left, right):
    if isinstance(left, Sized) and isinstance(right, Sized) \
            and len(left) + len(right) > MAX_STRING:
        raise SecurityError(f"'+' would build {len(left) + len(right):,} items "
                            f"(the limit is {MAX_STRING:,})")
    return _int_bits(left + right)


def _guarded_concat(*parts) -> str:
    """``a ~ b ~ ...`` with the result's size checked before it is built."""
    texts = [str(p) for p in parts]
    if sum(map(len, texts)) > MAX_STRING:
        raise SecurityError(f"'~' would build a string over {MAX_STRING:,} characters")
    return "".join(texts)


def _guarded_iter(iterable) -> Iterator:
    """A ``for`` loop's items, each counted against the render's budget."""
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.iterations += 1
            if budget.iterations > MAX_ITERATIONS:
                raise SecurityError(f"the template's loops ran more than {MAX_ITERATIONS:,} "
                                    "iterations")
            if budget.iterations % 1024 == 0:
                budget.tick()
        yield item


def _check_join(items: object) -> None:
    """Refuse joining strings whose lengths add up to more than :data:`MAX_STRING`."""
    if isinstance(items, (list, tuple)) and \
            sum(len(x) for x in items if isinstance(x, str)) > MAX_STRING:
        raise SecurityError(f"join would build a string over {MAX_STRING:,} characters")


def _guard_filter(fn, name: str):
    @wraps(fn)  # keeps jinja's pass_context / pass_environment marks
    def guarded(*args, **kwargs):
        _tick()
        _check_args(args[1:], kwargs)
        if name == "join":
            for a in args:
                _check_join(a)
        return _sized(fn(*args, **kwargs), MAX_STRING, "a filter's result")
    return guarded


class LimitedSandboxedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the limits of this module."""

    intercepted_binops = frozenset(["*", "**", "+"])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.globals["_lmforge_iter"] = _guarded_iter
        self.globals["_lmforge_concat"] = _guarded_concat

    def guard_filters(self) -> None:
        """Wrap every filter (call once all are registered)."""
        self.filters = {name: _guard_filter(fn, name) for name, fn in self.filters.items()}

    def call_binop(self, context, operator_name, left, right):
        _tick()
        op = {"*": _mul, "**": _pow, "+": _add}.get(operator_name)
        if op is None:
            return super().call_binop(context, operator_name, left, right)
        return op(left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
        _tick()
        _check_args(args, kwargs)
        if getattr(__obj, "__name__", None) == "join" and args:
            _check_join(args[0])
        if getattr(__obj, "__name__", None) == "replace" and isinstance(
                getattr(__obj, "__self__", None), str) and len(args) >= 2:
            s, old, new = __obj.__self__, str(args[0]), str(args[1])
            grow = s.count(old) * max(len(new) - len(old), 0) if old else len(s) * len(new)
            if len(s) + grow > MAX_STRING:
                raise SecurityError("str.replace would build a string over "
                                    f"{MAX_STRING:,} characters")
        result = super().call(__context, __obj, *args, **kwargs)
        return _sized(result, MAX_STRING, "a call's result")

    def _parse(self, source, name, filename):
        """The template's syntax tree, every ``for`` loop's items and every ``~`` routed
        through the guards."""
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):
            loop.iter = nodes.Call(nodes.Name("_lmforge_iter", "load"), [loop.iter], [],
                                   None, None, lineno=loop.lineno)
        for concat in list(tree.find_all(nodes.Concat)):
            args = list(concat.nodes)
            concat.nodes = [nodes.Call(nodes.Name("_lmforge_concat", "load"), args, [],
                                       None, None, lineno=concat.lineno)]
        return tree


def render_limited(template, **variables) -> str:
    """``template.render(**variables)`` within the limits (a fresh budget for this render)."""
    token = _BUDGET.set(Budget())
    try:
        out, size = [], 0
        for piece in template.generate(**variables):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the output passed {MAX_OUTPUT:,} characters")
            out.append(piece)
        return "".join(out)
    finally:
        _BUDGET.reset(token)


__all__ = ["LimitedSandboxedEnvironment", "render_limited"]
