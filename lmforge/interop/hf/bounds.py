"""Bounds on what a Hugging Face model directory may ask for: the shard names of a
``*.index.json`` stay inside the directory, and the sizes in ``config.json`` are checked
against lmforge's caps (:data:`lmforge.models.MAX_SIZES`) before anything is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CheckpointError, ConfigError
from ...models.config import MAX_SIZES

SIZE_KEYS = {  # config.json key -> the lmforge cap it maps to
    "num_hidden_layers": "n_layer", "n_layer": "n_layer", "encoder_layers": "n_layer",
    "decoder_layers": "n_layer",
    "hidden_size": "d_model", "n_embd": "d_model", "d_model": "d_model",
    "num_attention_heads": "n_head", "n_head": "n_head", "encoder_attention_heads": "n_head",
    "decoder_attention_heads": "n_head", "num_key_value_heads": "n_kv_head",
    "head_dim": "head_dim",
    "intermediate_size": "d_ff", "n_inner": "d_ff", "encoder_ffn_dim": "d_ff",
    "decoder_ffn_dim": "d_ff",
    "max_position_embeddings": "context_length", "n_positions": "context_length",
    "n_ctx": "context_length", "sliding_window": "attention_window",
    "vocab_size": "vocab_size", "type_vocab_size": "type_vocab_size",
}
"""Sizes of every family lmforge imports (Llama/Mistral/Qwen2, GPT-2, MarianMT, BERT)."""
_MAY_BE_ZERO = {"type_vocab_size", "sliding_window"}


def check_hf_sizes(hf: dict[str, Any], path: Path) -> None:
    """Each size in ``hf`` (a config.json) an integer within lmforge's cap; None (absent or
    null: the family's default) passes."""
    for key, cap_name in SIZE_KEYS.items():
        value = hf.get(key)
        if value is None:
            continue
        low, high = (0 if key in _MAY_BE_ZERO else 1), MAX_SIZES[cap_name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{path}: {key} = {value!r} is out of range; allowed: an "
                              f"integer from {low} to {high}")


def shard_paths(index: dict[str, Any], index_path: Path) -> list[Path]:
    """The shard files an index's ``weight_map`` names, each a plain file name inside the
    index's directory (no ``..``, no absolute path, no directory part, no symlink leading out
    of the directory); CheckpointError otherwise."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: weight_map must be a non-empty object "
                              "{tensor name: shard file name}")
    root = index_path.parent.resolve()
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: every weight_map value must be a shard file name")
    out = []
    for shard in sorted(set(weight_map.values())):
        plain = shard not in ("", ".", "..") and not any(c in shard for c in "/\\\0:")
        if not plain:
            raise CheckpointError(f"{index_path}: shard name {shard!r} is not a plain file name "
                                  "in the model directory; refusing to read it")
        path = root / shard
        if not path.is_file():
            raise CheckpointError(f"{index_path} names the shard {shard}, which is missing")
        if path.resolve().parent != root:
            raise CheckpointError(f"{index_path}: shard {shard!r} is a link to "
                                  f"{path.resolve()}, outside the model directory; refusing "
                                  "to read it")
        out.append(path)
    return out
