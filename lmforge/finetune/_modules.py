"""Finding and replacing submodules by name: the shared plumbing of LoRA and NF4.

Patterns select modules by their ``named_modules()`` name (``backbone.layers.3.attn.q_proj``):
a plain pattern is a shell-style glob (``fnmatch``: ``*`` also matches dots), a pattern that
starts with ``re:`` is a Python regular expression that must match the whole name.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable, Iterable, Sequence

from torch import nn

from ..errors import ConfigError

REGEX_PREFIX = "re:"


def compile_patterns(patterns: Sequence[str], what: str) -> list[Callable[[str], bool]]:
    """One predicate per pattern; a bad regular expression is a ConfigError naming ``what``."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise ConfigError(f"{what}: give at least one module-name pattern")
    out = []
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ConfigError(f"{what}: patterns must be non-empty strings, got {p!r}")
        if p.startswith(REGEX_PREFIX):
            try:
                rx = re.compile(p[len(REGEX_PREFIX):])
            except re.error as e:
                raise ConfigError(f"{what}: {p!r} is not a valid regular expression ({e})") from None
            out.append(lambda name, rx=rx: rx.fullmatch(name) is not None)
        else:
            out.append(lambda name, p=p: fnmatch.fnmatchcase(name, p))
    return out


def generalise(name: str) -> str:
    """``backbone.layers.3.attn.q_proj`` -> ``backbone.layers.*.attn.q_proj`` (a valid pattern)."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


def describe_names(names: Iterable[str], limit: int = 40) -> str:
    """The names with layer indices folded into ``*``, sorted, for error messages."""
    general = sorted(dict.fromkeys(generalise(n) for n in names))
    more = f", ... ({len(general) - limit} more)" if len(general) > limit else ""
    return ", ".join(general[:limit]) + more if general else "(none)"


def select(names: Sequence[str], patterns: Sequence[str], what: str) -> list[str]:
    """The names (in order) that match any pattern. Every pattern must match at least one name,
    otherwise a ConfigError lists the patterns that matched nothing and the names available."""
    preds = compile_patterns(patterns, what)
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    unmatched = [p for p, pred in zip(pats, preds) if not any(pred(n) for n in names)]
    if unmatched:
        raise ConfigError(
            f"{what}: pattern(s) {', '.join(map(repr, unmatched))} match no linear layer of this "
            f"model; available linear layers: {describe_names(names)} (globs match the full "
            f"module name; prefix a regular expression with {REGEX_PREFIX!r})")
    return [n for n in names if any(pred(n) for pred in preds)]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (``a.b.c``) by ``module``, in place."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def tied_parameter_names(model: nn.Module) -> dict[str, list[str]]:
    """For each parameter name that shares its tensor with another name: all its names."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return {n: names for names in by_id.values() if len(names) > 1 for n in names}


def check_not_tied(model: nn.Module, layers: Sequence[str], what: str) -> None:
    """Refuse layers whose weight is shared with another module (tied embeddings)."""
    tied = tied_parameter_names(model)
    for layer in layers:
        names = tied.get(f"{layer}.weight")
        if names:
            others = [n for n in names if n != f"{layer}.weight"]
            raise ConfigError(
                f"{what}: {layer}.weight is tied to {', '.join(others)}; changing it would change "
                "both. Leave this layer out of the patterns (or untie the embeddings first)")
