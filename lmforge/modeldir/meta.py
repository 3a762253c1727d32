"""meta.json, typed: :class:`ModelMeta` says how a model directory was made (trained, imported,
averaged, merged), on what, with which results, and how to use it (generation settings and
chat template, seq2seq tokens, sentence-embedding pooling, classifier labels).

It is read and written with the configs' machinery (:func:`lmforge.config.from_dict` /
:func:`~lmforge.config.to_dict`): a value of the wrong type in a typed field is a one-line
error naming meta.json and the field. Keys lmforge does not know (at the top level or inside a
typed section) are kept in ``extra`` rather than refused, so a newer file still loads.

``format_version`` is 2. Version-less files (``format_version`` absent, written before the
schema) are read by :func:`meta_from_dict` too: their ``imported_from`` / ``source`` (BERT
imports wrote both) and ``averaged_from`` become the one typed ``source`` record.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import _coerce, to_dict
from ..errors import CheckpointError, ConfigError

FORMAT_VERSION = 2
"""The meta.json layout this module writes (version-less files are the layout before it)."""


@dataclass
class Generation:
    """How to generate with the model (written by the importers; kept by averaging and by
    saving a loaded model). None = the model does not say."""

    bos_token_id: int | None = None
    eos_token_ids: list[int] | None = None
    """Generation stops at any of these. None: not recorded (the tokenizer's end-of-text
    token is used); an empty list: never stop early."""
    pad_token_id: int | None = None
    add_bos_token: bool | None = None
    """Whether the tokenizer puts the BOS token before a text by itself."""
    chat_template: str | None = None
    """A Jinja2 chat template (Hugging Face's ``apply_chat_template`` format)."""
    stop: list[str] | None = None
    """Strings that end a reply (cut off there), besides the stop tokens."""
    temperature: float | None = None
    """The model's recommended sampling temperature (0 = greedy)."""
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    do_sample: bool | None = None
    """Hugging Face's ``do_sample``: false means the model's authors decode greedily."""


@dataclass
class AveragedInput:
    path: str
    weight: float
    """The normalised weight of this model in the mean."""


@dataclass
class Source:
    """How the model directory was made."""

    kind: Literal["trained", "imported", "averaged", "merged"] = "trained"
    format: str | None = None
    """imported: ``huggingface``, ``hf-bert`` or ``gguf``."""
    path: str | None = None
    """imported: the directory or file it was converted from."""
    family: str | None = None
    """imported: lmforge's converter family (``llama``, ``gpt2``, ``bert``, ``marian``)."""
    model_type: str | None = None
    """imported: the Hugging Face ``model_type`` (or GGUF architecture)."""
    dtype: str | None = None
    """imported: the dtype of the weights as written."""
    name: str | None = None
    """imported: the model's own name (GGUF ``general.name``)."""
    architectures: list[str] | None = None
    tensor_types: list[str] | None = None
    """imported from GGUF: the tensor types of the file (dequantised on import)."""
    special_tokens: dict[str, str] | None = None
    """imported: {"eos_token": "</s>", ...} from the source's tokenizer files."""
    config: dict | None = None
    """imported: the source's Hugging Face config.json (export reuses its token ids)."""
    inputs: list[AveragedInput] | None = None
    """averaged: the model directories and their weights."""
    origin: Source | None = None
    """averaged / merged: how the (first) input or the base was made (an averaged import
    stays an import's)."""
    base: str | None = None
    """merged: the base model directory the adapter was merged into."""
    adapter: str | None = None
    """merged: the adapter directory."""


@dataclass
class Seq2SeqTokenNames:
    """An encoder–decoder's special tokens by name."""

    pad: str = "<pad>"
    start: str = "<s>"
    """The decoder's first input (MarianMT starts from ``<pad>``)."""
    eos: str = "</s>"


@dataclass
class SentenceEmbedding:
    """How a sentence-embedding model pools (sentence-transformers' 1_Pooling)."""

    pooling: str | None = None
    """``cls``, ``mean`` or ``max`` (None: the importer could not tell)."""
    normalize: bool = False
    """Whether embeddings are L2-normalised."""


@dataclass
class ClassifierInfo:
    """How a sequence classifier reads its inputs and names its classes."""

    labels: list[str] = field(default_factory=list)
    max_len: int | None = None
    truncation: str | None = None
    pooling: str | None = None
    mode: str | None = None
    format: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None


@dataclass
class ModelMeta:
    format_version: int = FORMAT_VERSION
    task: str | None = None
    """The job that made the model: ``causal-lm``, ``classify``, ``sft``, ``import``, ...
    (averaging keeps its inputs')."""
    lmforge_version: str | None = None
    saved_at: str | None = None
    """Set on every write."""
    source: Source | None = None
    """Provenance: trained, imported, averaged or merged (None: not recorded)."""
    base: str | None = None
    """Fine-tuned models: the model directory training started from."""
    data: dict | None = None
    tokenizer: dict | None = None
    parameters: int | None = None
    run_config: dict | None = None
    machine: dict | None = None
    training: dict | None = None
    """The trainer's summary (steps, tokens, losses, time)."""
    generation: Generation | None = None
    seq2seq_tokens: Seq2SeqTokenNames | None = None
    sentence_embedding: SentenceEmbedding | None = None
    classifier: ClassifierInfo | None = None
    eval: dict | None = None
    metrics: dict | None = None
    files: dict[str, str] | None = None
    """Integrity: file name -> its sha256 (hex), recorded at save (``model.safetensors``) and
    checked at load (:mod:`lmforge.modeldir.integrity`)."""
    extra: dict = field(default_factory=dict)
    """Anything else, by key: written at the top level of meta.json beside the typed fields
    (so files stay readable by older readers), read back from any key lmforge does not know."""

    def imported_source(self) -> Source | None:
        """The import this model descends from (its own source, or the origin of an averaged
        or merged model), or None."""
        source = self.source
        while source is not None and source.kind != "imported":
            source = source.origin
        return source

    def with_fields(self, **fields: Any) -> ModelMeta:
        """A copy with ``fields`` set (typed fields checked; other names go into ``extra``)."""
        return apply_fields(self, fields)

    # Read-only dict access in the version-less layout (``meta["task"]``,
    # ``meta.get("imported_from")``), so code written against the earlier dict meta keeps
    # working; new code reads the typed fields.
    def get(self, key: str, default: Any = None) -> Any:
        return legacy_view(self).get(key, default)

    def __getitem__(self, key: str) -> Any:
        return legacy_view(self)[key]

    def __contains__(self, key: object) -> bool:
        return key in legacy_view(self)


_FIELDS = {f.name for f in dataclasses.fields(ModelMeta)}


def _lenient(cls: type, data: dict, where: str, unknown: dict) -> dict:
    """``data`` with the keys ``cls`` does not have moved into ``unknown`` (by dotted path),
    recursing into typed sections, so :func:`from_dict` checks only the types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            unknown[path] = value
            continue
        sub = next((a for a in typing.get_args(hints[key]) if dataclasses.is_dataclass(a)), None)
        if sub is not None and isinstance(value, dict):
            value = _lenient(sub, value, path, unknown)
        out[key] = value
    return out


def _legacy_source(data: dict) -> dict | None:
    """The version-less provenance keys as one ``source`` record (the keys are removed)."""
    imported = {}
    for key in ("source", "imported_from"):  # a value of another type is left for the checks
        if isinstance(data.get(key), dict):
            imported.update(data.pop(key))
    averaged = data.pop("averaged_from", None)
    if averaged is not None:
        out: dict = {"kind": "averaged", "inputs": averaged}
        if imported:
            out["origin"] = {"kind": "imported", **imported}
        return out
    return {"kind": "imported", **imported} if imported else None


def meta_from_dict(data: dict, where: str = "meta.json") -> ModelMeta:
    """A meta.json's contents (version 2, or version-less) as a :class:`ModelMeta`; unknown
    keys go into ``extra``; a wrong type raises a one-line ConfigError naming ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    extra = data.pop("extra", None) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}: extra: expected a JSON object, got "
                          f"{type(extra).__name__}; correct or remove that field")
    extra = dict(extra)
    if "format_version" not in data:
        source = _legacy_source(data)
        if source is not None:
            data["source"] = source
    unknown: dict = {}
    known = _lenient(ModelMeta, data, "", unknown)
    extra.update(unknown)
    try:
        return apply_fields(ModelMeta(), {**known, "extra": extra}, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}; correct or remove that field") from None


def as_meta(meta: ModelMeta | dict | None, where: str = "meta") -> ModelMeta:
    """``meta`` as a ModelMeta: a plain dict is read as a meta.json's contents would be."""
    if isinstance(meta, ModelMeta):
        return meta
    return meta_from_dict(meta or {}, where)


def _check(value: Any, tp: Any, where: str) -> Any:
    """:func:`lmforge.config._coerce`, an optional section's own error kept (``X | None``)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is not None and len(args) == 1 and type(None) in typing.get_args(tp):
        tp = args[0]
    return _coerce(value, tp, where)


def apply_fields(meta: ModelMeta, fields: dict[str, Any], where: str = "") -> ModelMeta:
    """A copy of ``meta`` with ``fields`` set: typed fields type-checked (a dict for a typed
    section is read as such), other names added to ``extra`` (``extra`` itself is merged)."""
    hints = typing.get_type_hints(ModelMeta)
    typed, extra = {}, dict(meta.extra)
    for key, value in fields.items():
        path = f"{where}.{key}" if where else key
        if key == "extra":
            extra.update(_check(value, dict, path))
        elif key in _FIELDS:
            typed[key] = _check(value, hints[key], path)
        else:
            extra[key] = value
    return dataclasses.replace(meta, **typed, extra=extra)


def meta_to_dict(meta: ModelMeta) -> dict:
    """The JSON-ready contents of meta.json: the typed fields (None ones left out), then the
    ``extra`` keys at the top level."""
    clash = sorted(_FIELDS & meta.extra.keys())
    if clash:
        raise ConfigError(f"ModelMeta.extra has {', '.join(clash)}, which are typed fields; "
                          "set them as fields (meta.with_fields(...))")
    out = to_dict(dataclasses.replace(meta, format_version=FORMAT_VERSION, extra={}))
    out.pop("extra", None)
    return {**out, **to_dict(meta.extra)}


def legacy_view(meta: ModelMeta) -> dict:
    """The version-less dict layout of ``meta`` (``imported_from``, ``averaged_from``, extra
    keys at the top level), for readers not yet moved to the typed fields."""
    out = meta_to_dict(meta)
    source = meta.source
    if source is not None and source.kind == "averaged":
        out["averaged_from"] = to_dict(source.inputs or [])
        source = source.origin
    if source is not None and source.kind == "imported":
        out["imported_from"] = {k: v for k, v in to_dict(source).items() if k != "kind"}
    return out


def dumps_meta(meta: ModelMeta) -> str:
    return json.dumps(meta_to_dict(meta), indent=2, default=str) + "\n"


def read_meta_file(f: Path) -> ModelMeta:
    """``f`` (a meta.json) as a ModelMeta; a missing file is an empty ModelMeta."""
    if not f.is_file():
        return ModelMeta()
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); the file is corrupt: restore it "
                              "or delete it (the model loads without it)") from None
    return meta_from_dict(data, str(f))
