"""What a model directory says about generating with it, from meta.json's ``generation`` record
(:class:`lmforge.modeldir.Generation`, written by ``lmforge import`` and kept by averaging):
stop tokens, BOS, chat template, and the model's recommended sampling defaults.

Models trained with lmforge have no such record: their end-of-sequence token is the
tokenizer's ``<|endoftext|>`` (or ``[SEP]``), see :func:`lmforge.tokenizers.eos_token_id`.

Sampling settings come from three places, the first that says wins
(:func:`effective_sampling`): what the user asked for (``--temperature``), the model's own
defaults (a Hugging Face ``generation_config.json``, GGUF ``general.sampling.*``), lmforge's
built-in defaults (:data:`LMFORGE_SAMPLING`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ..modeldir.meta import Generation, ModelMeta, as_meta
from ..tokenizers import eos_token_id
from .generate import GenerationConfig


@dataclass
class GenerationSettings:
    eos_token_ids: list[int] = field(default_factory=list)
    """Generation stops at any of these (empty = never stops early)."""
    bos_token_id: int | None = None
    chat_template: str | None = None
    """A Jinja2 chat template (Hugging Face's ``apply_chat_template`` format), or None."""
    add_bos_token: bool = False
    """Whether the tokenizer puts the BOS token before a text by itself."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a reply, besides the stop tokens."""

    @property
    def eos_id(self) -> int | None:
        """The first stop id (the one padding finished rows), or None."""
        return self.eos_token_ids[0] if self.eos_token_ids else None


def generation_settings(meta: ModelMeta | dict | None, tokenizer) -> GenerationSettings:
    """The settings of a model directory from its meta.json and tokenizer; without recorded
    stop ids the tokenizer's ``<|endoftext|>``/``[SEP]`` is the stop token. Ids outside the
    vocabulary are left out. (A dict ``meta`` is read as meta.json would be, for now.)"""
    gen = as_meta(meta).generation or Generation()
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    ok = lambda i: isinstance(i, int) and 0 <= i < n  # noqa: E731
    if gen.eos_token_ids is None:
        found = eos_token_id(tokenizer)
        eos = [] if found is None else [found]
    else:
        eos = [i for i in gen.eos_token_ids if ok(i)]
    return GenerationSettings(eos_token_ids=eos,
                              bos_token_id=gen.bos_token_id if ok(gen.bos_token_id) else None,
                              chat_template=gen.chat_template,
                              add_bos_token=bool(gen.add_bos_token), stop=list(gen.stop or []))


@dataclass(frozen=True)
class Sampling:
    """Effective sampling settings and where each came from."""

    temperature: float = 0.7
    """0 = greedy."""
    top_k: int = 0
    """0 = all tokens."""
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    """1 = none; >1 makes tokens already present less likely (transformers' semantics)."""
    origin: dict[str, str] = field(default_factory=dict, compare=False)
    """Per setting: ``user``, ``model`` or ``lmforge``."""

    def apply(self, gen: GenerationConfig) -> GenerationConfig:
        """``gen`` with these temperature, top-k, top-p and repetition penalty."""
        return replace(gen, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                       repetition_penalty=self.repetition_penalty)


LMFORGE_SAMPLING = Sampling()
"""lmforge's defaults when neither the user nor the model says (temperature 0.7, top-p 0.9)."""
_KNOBS = ("temperature", "top_k", "top_p", "repetition_penalty")


def model_sampling(gen: Generation | None) -> dict[str, float | int]:
    """The sampling defaults a model records (only those it gives). Hugging Face's
    ``do_sample = false`` means greedy decoding: temperature 0."""
    if gen is None:
        return {}
    out = {k: getattr(gen, k) for k in _KNOBS if getattr(gen, k) is not None}
    if gen.do_sample is False:
        out["temperature"] = 0.0
    return out


def effective_sampling(model: ModelMeta | Generation | None, *, temperature: float | None = None,
                       top_k: int | None = None, top_p: float | None = None,
                       repetition_penalty: float | None = None,
                       defaults: Sampling = LMFORGE_SAMPLING) -> Sampling:
    """The sampling settings to use: each one the user's (not None) if given, else the
    model's recommended default (its meta.json ``generation`` record), else ``defaults``."""
    gen = model.generation if isinstance(model, ModelMeta) else model
    user = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty).items() if v is not None}
    recommended = model_sampling(gen)
    values, origin = {}, {}
    for f in fields(Sampling):
        if f.name not in _KNOBS:
            continue
        for name, source in (("user", user), ("model", recommended)):
            if f.name in source:
                values[f.name], origin[f.name] = source[f.name], name
                break
        else:
            values[f.name], origin[f.name] = getattr(defaults, f.name), "lmforge"
    return Sampling(**values, origin=origin)


def describe_sampling(s: Sampling) -> str:
    """One line for a person: each setting and where it came from (user, model, lmforge)."""
    origin = lambda k: {"model": " from the model", "user": ""}.get(s.origin.get(k), "")  # noqa: E731
    rp = "" if s.repetition_penalty == 1.0 else \
        f", repetition penalty {s.repetition_penalty:g}{origin('repetition_penalty')}"
    return (f"temperature {s.temperature:g}{origin('temperature')}, top-k {s.top_k}"
            f"{origin('top_k')}, top-p {s.top_p:g}{origin('top_p')}{rp}")
