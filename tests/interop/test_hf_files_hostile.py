"""Hostile Hugging Face directories, built inside each test: shard names that lead out of the
directory are refused before anything is read, config.json sizes over lmforge's caps and JSON
files that are not objects (or not UTF-8, or not JSON) are one error naming the file."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.errors import CheckpointError, ConfigError
from lmforge.interop import import_hf

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 8,
          "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 32,
          "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (8, 8), "model.norm.weight": (8,),
              "model.layers.0.input_layernorm.weight": (8,),
              "model.layers.0.post_attention_layernorm.weight": (8,),
              **{f"model.layers.0.self_attn.{p}_proj.weight": (8, 8) for p in "qkvo"},
              "model.layers.0.mlp.gate_proj.weight": (16, 8),
              "model.layers.0.mlp.up_proj.weight": (16, 8),
              "model.layers.0.mlp.down_proj.weight": (8, 16)}
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


def hf_dir(root, index: dict | None = None, config: dict | None = None):
    """A two-shard Llama directory; ``index`` replaces the weight_map."""
    d = root / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config or CONFIG))
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate("abcdefg")} | {"<unk>": 7},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    tensors, weight_map = _tensors(), {}
    for i, part in enumerate((list(tensors)[:5], list(tensors)[5:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(d / name))
        weight_map |= {k: name for k in part}
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map if index is None else index}))
    return d


def test_valid_sharded_directory_imports(tmp_path):
    out = import_hf(hf_dir(tmp_path), tmp_path / "lm")
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("shard,match", [
    ("../outside.safetensors", "is not a plain file name"),
    ("/etc/passwd", "is not a plain file name"),
    ("sub/model.safetensors", "is not a plain file name"),
    ("..", "is not a plain file name"),
    ("", "is not a plain file name"),
    ("a\\..\\b", "is not a plain file name"),
])
def test_shard_names_outside_the_directory_are_refused(tmp_path, shard, match):
    save_file(_tensors(), str(tmp_path / "outside.safetensors"))  # would load, if read
    d = hf_dir(tmp_path, index={"model.norm.weight": shard})
    with pytest.raises(CheckpointError, match=match) as e:
        import_hf(d, tmp_path / "lm")
    assert "model.safetensors.index.json" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "lm").exists()


def test_symlinked_shard_escaping_the_directory_is_refused(tmp_path):
    save_file(_tensors(), str(tmp_path / "outside.safetensors"))
    d = hf_dir(tmp_path, index={"model.norm.weight": "link.safetensors"})
    os.symlink(tmp_path / "outside.safetensors", d / "link.safetensors")
    with pytest.raises(CheckpointError, match="is a link to .*outside the model directory"):
        import_hf(d, tmp_path / "lm")


@pytest.mark.parametrize("index,match", [
    ({}, "weight_map must be a non-empty object"),
    ({"a": 3}, "every weight_map value must be a shard file name"),
    ({"a": "missing.safetensors"}, "names the shard missing.safetensors, which is missing"),
])
def test_bad_weight_maps(tmp_path, index, match):
    with pytest.raises(CheckpointError, match=match):
        import_hf(hf_dir(tmp_path, index=index), tmp_path / "lm")


@pytest.mark.parametrize("key,value", [
    ("num_hidden_layers", 10**9), ("hidden_size", -1), ("num_attention_heads", 0),
    ("intermediate_size", "big"), ("max_position_embeddings", 4 * 10**9), ("vocab_size", True),
    ("num_key_value_heads", 2**40), ("head_dim", 1.5),
])
def test_config_sizes_over_the_caps(tmp_path, key, value):
    d = hf_dir(tmp_path, config={**CONFIG, key: value})
    with pytest.raises(ConfigError, match=rf"config.json: {key} = .* is out of range; allowed"):
        import_hf(d, tmp_path / "lm")


@pytest.mark.parametrize("name,raw,match", [
    ("config.json", b"[1, 2]", "must hold a JSON object, not list"),
    ("config.json", b"\xff\xfe{}", "cannot be read as JSON"),
    ("config.json", b"{\"a\": ", "cannot be read as JSON"),
    ("config.json", b"[" * 200_000, "cannot be read as JSON|must hold a JSON object"),
    ("model.safetensors.index.json", b"\"weights\"", "must hold a JSON object, not str"),
])
def test_bad_json_files(tmp_path, name, raw, match):
    d = hf_dir(tmp_path)
    (d / name).write_bytes(raw)
    with pytest.raises(ConfigError, match=match) as e:
        import_hf(d, tmp_path / "lm")
    assert name in str(e.value) and "\n" not in str(e.value)
