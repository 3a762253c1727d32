"""What a Hugging Face model family gives the importer and exporter, and the helpers the
families share: reading options from an HF ``config.json`` dict and renaming tensors.

A family converts in both directions:
  * configs:  HF ``config.json`` dict <-> :class:`ModelConfig`
  * weights:  HF state dict (HF names) <-> lmforge ``CausalLM`` state dict
and says which lmforge configs it cannot represent (``export_problems``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, ConfigError
from ...modeldir.directory import DTYPES, check_tensors
from ...models import ModelConfig

Tensors = dict[str, torch.Tensor]
Pair = tuple[str, str, bool]
"""(HF tensor name, lmforge tensor name, whether HF stores the matrix transposed)."""


@dataclass(frozen=True)
class Family:
    name: str
    """lmforge's name for the family (``gpt2``, ``llama``)."""
    model_types: tuple[str, ...]
    """The HF ``model_type`` values import reads with this family."""
    architecture: str
    """The ``transformers`` class export names in config.json."""
    prefix: str
    """Prefix of the backbone's tensor names that some checkpoints leave out (``transformer.``)."""
    config_from_hf: Callable[[dict], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    state_from_hf: Callable[[Mapping[str, torch.Tensor], ModelConfig], Tensors]
    state_to_hf: Callable[[Mapping[str, torch.Tensor], ModelConfig], Tensors]
    export_problems: Callable[[ModelConfig], list[str]]
    """Why a config cannot be written as this family (empty = it can)."""
    import_dir: Callable[[Path, Path, str | None], Path] | None = None
    """A family whose import is more than config + renamed weights (BERT: encoder heads,
    sentence-embedding pooling) converts the whole directory itself: (src, out, dtype)."""
    exports: bool = True
    """Whether ``lmforge export`` can write this family."""


ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
               "relu": "relu", "silu": "silu", "swish": "silu"}
"""HF ``activation_function`` / ``hidden_act`` -> lmforge activation (HF's "gelu" is the exact
erf GELU, "gelu_new" the tanh approximation)."""


def need(hf: dict, key: str, family: str) -> Any:
    """A config.json entry the family cannot do without."""
    if key not in hf:
        raise ConfigError(f"the Hugging Face config has no {key!r}, which a {family} model needs")
    return hf[key]


def hf_option(hf: dict, key: str, default: Any, supported: Collection, family: str) -> Any:
    """``hf[key]`` (or ``default``), refused with a ConfigError unless it is in ``supported``."""
    value = hf.get(key, default)
    if value not in supported:
        raise ConfigError(f"Hugging Face config {key}={value!r} is not supported for {family} "
                          f"models; supported: {', '.join(repr(s) for s in supported)}")
    return value


PLAIN_DECODER: dict[str, tuple] = {"arch": ("decoder",), "prenorm": (True,), "type_vocab_size": (0,),
                                   "embed_norm": (False,)}
"""What every exportable config has: a pre-norm decoder with only token (+ position) embeddings."""


def problems(cfg: ModelConfig, **wanted: Collection) -> list[str]:
    """``field=value (needs one of ...)`` for each config field whose value is not wanted."""
    out = []
    for name, ok in wanted.items():
        value = getattr(cfg, name)
        if value not in ok:
            out.append(f"{name}={value!r} (needs {' or '.join(repr(v) for v in ok)})")
    return out


def take(src: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    try:
        return src[name]
    except KeyError:
        raise CheckpointError(f"the checkpoint has no tensor {name!r}, which this config "
                              "needs; is config.json the one the weights were saved with?") from None


def rename(src: Mapping[str, torch.Tensor], pairs: list[Pair], to_hf: bool) -> Tensors:
    """Copy tensors under their other name: HF -> lmforge, or lmforge -> HF with ``to_hf``;
    matrices HF stores transposed (GPT-2's Conv1D, (in, out)) are transposed on the way."""
    out = {}
    for hf_name, our_name, transposed in pairs:
        src_name, dst_name = (our_name, hf_name) if to_hf else (hf_name, our_name)
        t = take(src, src_name)
        out[dst_name] = (t.t() if transposed else t).contiguous()
    return out


def lm_head_from_hf(src: Mapping[str, torch.Tensor], cfg: ModelConfig, embed: str) -> torch.Tensor:
    """The output matrix (V, C): the embedding when tied (a stored copy is ignored)."""
    return take(src, embed) if cfg.tie_embeddings else take(src, "lm_head.weight")


def lm_head_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """HF leaves the tied output matrix out of the checkpoint and ties it on load."""
    return {} if cfg.tie_embeddings else {"lm_head.weight": take(sd, "lm_head.weight").contiguous()}


_BUFFERS = re.compile(r"(^|\.)attn\.(bias|masked_bias)$|rotary_emb\.inv_freq$")
"""Non-weight buffers some checkpoints carry (GPT-2's causal mask, old Llama's RoPE table)."""


def own_storage(tensors: dict[str, torch.Tensor]) -> Tensors:
    """Copy tensors that share memory with an earlier one (safetensors refuses shared memory)."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def unused_tensors(weights: Mapping[str, torch.Tensor], used: Mapping[str, torch.Tensor],
                   family: Family, cfg: ModelConfig) -> list[str]:
    """Checkpoint tensors the conversion did not read: parts the family does not model."""
    strip = lambda name: name.removeprefix(family.prefix)  # noqa: E731
    read = {strip(k) for k in used} | ({"lm_head.weight"} if cfg.tie_embeddings else set())
    return sorted(k for k in weights if strip(k) not in read and not _BUFFERS.search(k))


def cast_tensors(tensors: Tensors, dtype: str | None) -> Tensors:
    """Floating-point tensors cast to ``dtype`` (float32, bfloat16, float16; None: as they are)."""
    if dtype is None:
        return tensors
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in tensors.items()}


def converted_tensors(family: Family, weights: Mapping[str, torch.Tensor], cfg: ModelConfig,
                      where: str, dtype: str | None) -> Tensors:
    """``weights`` (a Hugging Face checkpoint) as lmforge tensors of ``cfg``: refused when the
    checkpoint has tensors the family does not model, the tied head dropped, shapes checked,
    cast to ``dtype``, each tensor with storage of its own."""
    tensors = family.state_from_hf(weights, cfg)
    unused = unused_tensors(weights, family.state_to_hf(tensors, cfg), family, cfg)
    if unused:
        more = ", ..." if len(unused) > 5 else ""
        raise CheckpointError(f"{where}: the checkpoint has tensors a plain {family.architecture} "
                              f"does not have ({', '.join(unused[:5])}{more}); this variant is "
                              "not supported")
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    check_tensors(cfg, tensors, where)
    return own_storage(cast_tensors(tensors, dtype))


def dtype_name(tensors: Mapping[str, torch.Tensor]) -> str:
    """The floating-point dtype most of the weights have ("float32", "bfloat16", ...)."""
    floats = Counter(str(t.dtype).removeprefix("torch.") for t in tensors.values()
                     if t.is_floating_point())
    return floats.most_common(1)[0][0] if floats else "float32"
