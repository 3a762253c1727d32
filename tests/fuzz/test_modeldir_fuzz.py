"""Fuzzing a model directory's JSON files: meta.json through read_meta and config.json through
read_config, as random and mutated bytes and as valid objects with a wrong-typed value at
every field (nested ones included). Any result is a ModelMeta / ModelConfig or an
LMForgeError, never another exception."""

import json
import tempfile
from pathlib import Path

import pytest
from fuzz_strategies import file_bytes, json_values
from hypothesis import HealthCheck, given, settings, strategies as st

from lmforge.config import to_dict
from lmforge.errors import LMForgeError
from lmforge.models import ModelConfig
from lmforge.modeldir.directory import read_config, read_meta
from lmforge.modeldir.meta import ModelMeta

META = {
    "format_version": 2, "task": "causal-lm", "lmforge_version": "0.1", "saved_at": "2026",
    "source": {"kind": "imported", "format": "hf", "path": "x", "family": "llama",
               "architectures": ["LlamaForCausalLM"], "special_tokens": {"bos": "<s>"},
               "config": {"a": 1}, "inputs": [{"path": "a", "weight": 0.5}],
               "origin": {"kind": "trained"}},
    "base": "b", "data": {"files": 1}, "tokenizer": {"kind": "char"}, "parameters": 10,
    "run_config": {"train": {}}, "machine": {}, "training": {"step": 3},
    "generation": {"bos_token_id": 1, "eos_token_ids": [2, 3], "pad_token_id": 0,
                   "add_bos_token": True, "chat_template": "{{ x }}", "stop": ["\n"],
                   "temperature": 0.7, "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.1,
                   "do_sample": True},
    "seq2seq_tokens": {"pad": "<pad>", "start": "<s>", "eos": "</s>"},
    "sentence_embedding": {"pooling": "mean", "normalize": True},
    "classifier": {"labels": ["a", "b"], "max_len": 8, "pooling": "cls"},
    "eval": {}, "metrics": {"loss": 1.0}, "files": {"model.safetensors": "0" * 64},
    "extra": {"k": "v"},
}
CONFIG = to_dict(ModelConfig(vocab_size=16, d_model=32, n_layer=1, n_head=2, context_length=16))


def _paths(d: dict, prefix=()):
    """Every key path of a nested dict (lists of dicts: their first element too)."""
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            yield from _paths(v[0], prefix + (k, 0))


FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _read(reader, name: str, data: bytes, ok_type):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / name).write_bytes(data)
        try:
            assert isinstance(reader(d), ok_type)
        except LMForgeError as e:
            assert str(e) and "\n" not in str(e).strip()


def _with_value(seed: dict, path: tuple, value) -> bytes:
    data = json.loads(json.dumps(seed))
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return json.dumps(data).encode()


def test_the_seeds_read():
    _read(read_meta, "meta.json", json.dumps(META).encode(), ModelMeta)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "meta.json").write_text(json.dumps(META))
        assert read_meta(d).generation.top_k == 5
        (Path(d) / "config.json").write_text(json.dumps(CONFIG))
        assert read_config(d).d_model == 32


@FUZZ
@given(data=file_bytes(json.dumps(META, indent=1).encode()))
def test_mutated_meta_json(bounded, data):
    with bounded(20):
        _read(read_meta, "meta.json", data, ModelMeta)


@FUZZ
@given(path=st.sampled_from(list(_paths(META))), value=json_values)
def test_meta_json_wrong_value_at_any_field(bounded, path, value):
    with bounded(20):
        _read(read_meta, "meta.json", _with_value(META, path, value), ModelMeta)


@FUZZ
@given(data=file_bytes(json.dumps(CONFIG, indent=1).encode()))
def test_mutated_config_json(bounded, data):
    with bounded(20):
        _read(read_config, "config.json", data, ModelConfig)


@FUZZ
@given(path=st.sampled_from(list(_paths(CONFIG))), value=json_values)
def test_config_json_wrong_value_at_any_field(bounded, path, value):
    with bounded(20):
        _read(read_config, "config.json", _with_value(CONFIG, path, value), ModelConfig)


# regressions the fuzzing found (each was another exception type before the fix)
@pytest.mark.parametrize("data", [
    b"\xfb\n \"arch\": \"decoder\"}",  # config.json not UTF-8: UnicodeDecodeError
    b"[1, 2]",  # not an object
    b"[" * 100_000 + b"]" * 100_000,  # nesting: RecursionError
])
def test_config_json_found_by_fuzzing(tmp_path, data):
    (tmp_path / "config.json").write_bytes(data)
    with pytest.raises(LMForgeError, match="config.json"):
        read_config(tmp_path)


def test_deeply_nested_meta_json(tmp_path):
    (tmp_path / "meta.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(LMForgeError, match="meta.json is not valid JSON"):
        read_meta(tmp_path)
