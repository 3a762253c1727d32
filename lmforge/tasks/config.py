"""The run config: everything `lmforge train CONFIG.toml` reads. Every field has a default;
a TOML file only lists what it changes. ``docs/config.md`` documents each field.

The fixed tables are ``[model]``, ``[tokenizer]``, ``[data]`` and ``[train]``; each registered
task adds its own table (``[classify]``, ``[sft]``, ``[seq2seq]``, ...), found through the task
registry, so a new task brings its config with it and this module does not change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import apply_overrides, build_dataclass, from_dict, load_file
from ..errors import ConfigError
from ..models import ModelConfig
from ..training import TrainConfig
from .presets import preset_dict
from .registry import check_task_name, task_sections


@dataclass
class TokenizerConfig:
    kind: Literal["char", "bpe", "wordpiece", "unigram"] = "char"
    """Tokenizer to train on the training data (ignored when ``path`` is set)."""
    vocab_size: int = 4096
    """Target vocabulary size for bpe/wordpiece/unigram (char takes every character seen)."""
    path: str = ""
    """An existing tokenizer.json (or a directory holding one) to use instead of training."""


@dataclass
class DataConfig:
    path: str | list[str] = ""
    """Text file(s), directories or JSONL files to train on."""
    text_field: str = "text"
    """Field holding the text in JSONL records."""
    val_fraction: float = 0.1
    """Share of the token stream held out for validation (the end of the data)."""
    cache_dir: str = ""
    """Where the tokenised memory-mapped arrays are cached; "" = OUT_DIR/data-cache."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction: must be in [0, 1), got {self.val_fraction}")


@dataclass
class RunConfig:
    out_dir: str = "runs/lm"
    """The model directory written by this run (checkpoints, logs and plots go inside)."""
    seed: int = 1337
    """Seeds the model initialisation, dropout and the order of training batches."""
    task: str = ""
    """The job (docs/tasks.md): causal-lm, mlm, translation, span-corruption, classify, sft,
    or any registered task. "" = by model.arch: decoder -> causal-lm, encoder -> mlm (masked
    LM + next sentence), seq2seq -> translation (span-corruption when seq2seq.objective says
    so). "pretrain" is the earlier name of "". Each task reads its own table ([classify],
    [sft], [seq2seq], ...)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_task_name(self.task)
        # the task tables, each at its defaults until a config file sets it
        self.__dict__["_tables"] = {name: cls() for name, cls in task_sections().items()}

    def __getattr__(self, name: str) -> Any:  # cfg.classify, cfg.sft, cfg.seq2seq, ...
        tables = self.__dict__.get("_tables")
        if tables is None:
            raise AttributeError(name)
        if name not in tables:
            if name in task_sections():  # a task registered after this config was made
                tables[name] = task_sections()[name]()
                return tables[name]
            raise AttributeError(f"RunConfig has no field or task table {name!r}")
        return tables[name]

    def __setattr__(self, name: str, value: Any) -> None:
        tables = self.__dict__.get("_tables")
        if tables is not None and name in task_sections():
            tables[name] = value
        else:
            object.__setattr__(self, name, value)

    def __extra_tables__(self) -> dict:
        """The task tables, for :func:`lmforge.config.to_dict` (run.toml, meta.json)."""
        return dict(self.__dict__["_tables"])

    @classmethod
    def __from_dict__(cls, data: dict, where: str = "") -> "RunConfig":
        """The fixed fields by :func:`~lmforge.config.from_dict`, each task table by its
        task's dataclass; an unknown table gets a "did you mean"."""
        sections = task_sections()
        own = {f for f in cls.__dataclass_fields__}
        unknown = [k for k in data if k not in own and k not in sections]
        if unknown:
            known = sorted(own | set(sections))
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            path = f"{where}.{unknown[0]}" if where else unknown[0]
            raise ConfigError(f"unknown config key {path!r}{hint} (known keys here: "
                              f"{', '.join(known)})")
        cfg = build_dataclass(cls, {k: v for k, v in data.items() if k in own}, where)
        for name, table_cls in sections.items():
            if name in data:
                value = data[name]
                path = f"{where}.{name}" if where else name
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: expected a table of {table_cls.__name__} "
                                      f"fields, got {value!r}")
                setattr(cfg, name, from_dict(table_cls, value, path))
        return cfg

    @classmethod
    def load(cls, path: str | None = None, overrides: list[str] | None = None,
             preset: str | None = None) -> "RunConfig":
        """Preset (if any) < config file (if any) < ``--set`` overrides."""
        data: dict = preset_dict(preset) if preset else {}
        if path:
            _deep_update(data, load_file(path))
        apply_overrides(data, overrides or [])
        where = f"{path}: " if path else ""
        try:
            return from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base
