"""Typed dataclass configs: load from TOML/JSON dicts, apply ``--set a.b=c`` overrides, validate.

Every config in lmforge is a plain ``@dataclass`` whose field defaults are the documented
defaults. :func:`from_dict` builds one from a nested dict and names the exact field when a key
is unknown or a value has the wrong type; :func:`to_dict` is the inverse (JSON/TOML-safe).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "none"
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints widen to float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {_type_name(tp)}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


class FieldError(ConfigError):
    """A bad value of one field, raised by a config dataclass's ``__post_init__`` as
    ``FieldError(self, "rank", "must be a positive integer, got 0")``. The message names the
    field under its class (``LoRAConfig.rank: ...``); :func:`from_dict` names it by its path in
    the config instead (``sft.lora.rank: ...``)."""

    def __init__(self, owner: Any, field: str, why: str):
        self.owner = owner if isinstance(owner, str) else type(owner).__name__
        self.field, self.why = field, why
        super().__init__(f"{self.owner}.{field}: {why}")

    def at(self, where: str) -> "FieldError":
        """The same error named by its path ``where`` (the table the dataclass was read from)."""
        return FieldError(where, self.field, self.why)


def _rewrite_legacy(cls: type, data: dict, where: str) -> dict:
    """``data`` with the old keys ``cls._legacy_keys`` declares (``{"lora_rank": "lora.rank",
    "method": "mode"}``) moved to their new, possibly nested, places. Giving an old key and
    its new place both is a ConfigError."""
    legacy: dict[str, str] = getattr(cls, "_legacy_keys", {})
    if not any(k in legacy for k in data):
        return data
    out = {k: v for k, v in data.items() if k not in legacy}
    for old, value in data.items():
        if old not in legacy:
            continue
        *parents, leaf = legacy[old].split(".")
        node: Any = out
        for p in parents:  # copies: the caller's nested tables stay as they were
            child = node.get(p, {})
            if not isinstance(child, dict):
                node = None
                break
            node[p] = dict(child)
            node = node[p]
        new_path = ".".join(x for x in (where, legacy[old]) if x)
        old_path = f"{where}.{old}" if where else old
        if not isinstance(node, dict) or leaf in node:
            raise ConfigError(f"{old_path} is the old name of {new_path} and both are given; "
                              f"keep only {new_path}")
        node[leaf] = value
    return out


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    Old key names that ``cls._legacy_keys`` (a ClassVar) maps to new ones are rewritten first,
    and a :class:`FieldError` of the dataclass's own validation is named by its path under
    ``where`` (``sft.lora.rank: must be a positive integer, got 0``). A dataclass with open
    tables (the run config's task tables) reads itself: ``cls.__from_dict__(data, where)``."""
    if hasattr(cls, "__from_dict__"):
        return cls.__from_dict__(data, where)
    return build_dataclass(cls, data, where)


def build_dataclass(cls: type[T], data: dict, where: str = "") -> T:
    """:func:`from_dict` for the declared fields of ``cls`` only (no ``__from_dict__``)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    data = _rewrite_legacy(cls, data, where)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {path!r}{hint} (known keys here: {', '.join(sorted(names))})"
            )
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except FieldError as e:
        if not where:
            raise
        raise e.at(where) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain nested dict (lists/dicts/scalars only), ``None`` values dropped;
    a dataclass with open tables adds them itself (``obj.__extra_tables__()``)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = to_dict(getattr(obj, f.name))
            if v is not None:
                out[f.name] = v
        extra = getattr(obj, "__extra_tables__", None)
        if extra is not None:
            out.update({k: to_dict(v) for k, v in extra().items()})
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value (``3e-4``, ``true``, ``"x"``, ``[1, 2]``);
    anything that is not valid TOML is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example train.lr=3e-4")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is a value, not a table")
        node[parts[-1]] = parse_value(text.strip())
    return data


def load_file(path: str | Path) -> dict:
    """Read a TOML or JSON config file into a dict, naming the file (and line) on errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: cannot parse: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a table (a JSON object), got a "
                          f"{type(data).__name__}")
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dumps_toml(data: dict) -> str:
    """Write a two-level dict (top-level tables of scalars/lists, one nesting) as TOML."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")

    def table(prefix: str, d: dict) -> None:
        lines.append("")
        lines.append(f"[{prefix}]")
        subs = {}
        for k, v in d.items():
            if isinstance(v, dict):
                subs[k] = v
            else:
                lines.append(f"{k} = {_toml_value(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{k}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            table(k, v)
    return "\n".join(lines).lstrip("\n") + "\n"
