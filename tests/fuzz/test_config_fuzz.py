"""Fuzzing the run-config reader (RunConfig.load): random and mutated TOML/JSON text, and valid
structures with a wrong-typed value at every field. Any result is a RunConfig or an
LMForgeError (ConfigError naming the file), never another exception."""

import json
import tempfile
from pathlib import Path

import pytest
from fuzz_strategies import file_bytes, json_values
from hypothesis import HealthCheck, given, settings, strategies as st

from lmforge.errors import ConfigError, LMForgeError
from lmforge.tasks import RunConfig

SEED_TOML = b'''out_dir = "runs/shakes"
task = "causal-lm"
[data]
path = "input.txt"   # a comment
val_fraction = 0.1
[tokenizer]
kind = "char"
[model]
d_model = 192
n_layer = 4
n_head = 6
context_length = 128
positional = "rope"
[train]
max_steps = 2500
batch_size = 32
lr = 2e-3
'''
SEED = {"out_dir": "runs/x", "data": {"path": "input.txt", "val_fraction": 0.1},
        "tokenizer": {"kind": "char"},
        "model": {"d_model": 32, "n_layer": 1, "n_head": 2, "context_length": 16,
                  "positional": "rope"},
        "train": {"max_steps": 5, "batch_size": 2, "lr": 2e-3}}
FIELDS = [(None, k) for k in SEED if not isinstance(SEED[k], dict)] + [
    (t, k) for t, table in SEED.items() if isinstance(table, dict) for k in table]
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _load(data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"run{suffix}"
        f.write_bytes(data)
        try:
            return RunConfig.load(str(f))
        except LMForgeError as e:
            assert str(e) and "\n" not in str(e).strip()
            return e


def test_the_seeds_load():
    assert isinstance(_load(SEED_TOML, ".toml"), RunConfig)
    assert isinstance(_load(json.dumps(SEED).encode(), ".json"), RunConfig)


@FUZZ
@given(data=file_bytes(SEED_TOML))
def test_mutated_toml(bounded, data):
    with bounded(20):
        _load(data, ".toml")


@FUZZ
@given(data=file_bytes(json.dumps(SEED, indent=1).encode()))
def test_mutated_json(bounded, data):
    with bounded(20):
        _load(data, ".json")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_a_wrong_value_at_any_field(bounded, field, value):
    table, key = field
    data = json.loads(json.dumps(SEED))
    (data[table] if table else data)[key] = value
    with bounded(20):
        _load(json.dumps(data).encode(), ".json")


# regressions the fuzzing found (each was another exception type before the fix)
@pytest.mark.parametrize("data,suffix", [
    (b'out_dir = "\xff"\n', ".toml"),  # not UTF-8: UnicodeDecodeError
    (b"[1, 2]", ".json"),  # not an object at the top: AttributeError in the merge
    (b'"text"', ".json"),
    (b"[" * 100_000 + b"]" * 100_000, ".json"),  # nesting: RecursionError
])
def test_found_by_fuzzing(data, suffix):
    with pytest.raises(ConfigError, match="run"):
        RunConfig.load(str(_write(data, suffix)))


def _write(data: bytes, suffix: str) -> Path:
    f = Path(tempfile.mkdtemp()) / f"run{suffix}"
    f.write_bytes(data)
    return f
