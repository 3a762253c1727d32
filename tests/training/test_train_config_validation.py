"""Every bad ``[train]`` value is one ConfigError naming the field and the allowed range,
from Python and from a run config alike."""

import math

import pytest

from lmforge.config import from_dict
from lmforge.errors import ConfigError
from lmforge.training import TrainConfig

BAD = [
    ("max_steps", 0, ">= 1"), ("batch_size", -1, ">= 1"), ("grad_accum", 0, ">= 1"),
    ("eval_batches", 0, ">= 1"), ("log_every", 0, ">= 1"), ("keep_checkpoints", 0, ">= 1"),
    ("seq_len", -1, ">= 0"), ("warmup_steps", -5, ">= 0"), ("eval_every", -1, ">= 0"),
    ("checkpoint_every", -10, ">= 0"),
    ("lr", -1e-3, ">= 0"), ("lr", math.nan, "finite"), ("lr", math.inf, "finite"),
    ("min_lr", -1.0, ">= 0"), ("weight_decay", math.nan, "finite"), ("grad_clip", -1.0, ">= 0"),
    ("max_minutes", -1.0, ">= 0"),
    ("layer_decay", 0.0, r"\(0, 1\]"), ("layer_decay", 1.5, r"\(0, 1\]"),
    ("layer_decay", math.nan, r"\(0, 1\]"),
    ("beta1", 1.0, r"\[0, 1\)"), ("beta1", -0.1, r"\[0, 1\)"), ("beta2", 1.5, r"\[0, 1\)"),
    ("beta2", math.nan, r"\[0, 1\)"),
    ("device", "gpu", "auto, cpu, cuda, cuda:N or mps"), ("device", "cuda:", "cuda:N"),
    ("device", "cuda:x", "cuda:N"), ("device", "", "cuda:N"), ("device", "CPU", "cuda:N"),
]


@pytest.mark.parametrize("field,value,allowed", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_value_names_the_field_and_the_range(field, value, allowed):
    with pytest.raises(ConfigError, match=rf"^train\.{field}: .*{allowed}") as err:
        TrainConfig(**{field: value})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=rf"train\.{field}"):  # the run-config path too
        from_dict(TrainConfig, {field: value}, "train")


GOOD = [("eval_every", 0), ("checkpoint_every", 0), ("warmup_steps", 0), ("beta1", 0.0),
        ("beta2", 0.999), ("keep_checkpoints", 1), ("device", "cuda:3"), ("device", "mps"),
        ("device", "cpu"), ("device", "auto"), ("device", "cuda"), ("layer_decay", 1.0)]


@pytest.mark.parametrize("field,value", GOOD)
def test_edge_values_are_accepted(field, value):
    assert getattr(TrainConfig(**{field: value}), field) == value
