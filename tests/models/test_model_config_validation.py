"""Every bad model size or positive float is one ConfigError naming the field and the allowed
range, so a hostile ``config.json`` cannot drive huge allocations or NaNs."""

import math

import pytest

from lmforge.config import from_dict
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig
from lmforge.models.config import MAX_SIZES

BAD = [
    ("d_model", 0, {}), ("d_model", 2**17, {}), ("n_layer", 0, {}), ("n_layer", 10**9, {}),
    ("n_head", 0, {}), ("n_head", 2048, {"d_model": 4096}),
    ("context_length", 0, {}), ("context_length", 4 * 10**9, {}),
    ("context_length", 2**20 + 1, {}),
    ("vocab_size", -1, {}), ("vocab_size", 2**30, {}),
    ("d_ff", 0, {}), ("d_ff", -4, {}), ("d_ff", 2**21, {}),
    ("head_dim", 0, {}), ("head_dim", -8, {}), ("head_dim", 2**13, {}),
    ("n_kv_head", 0, {}), ("encoder_layers", 2000, {"arch": "seq2seq"}),
    ("type_vocab_size", 2**20, {}),
    ("init_std", 0.0, {}), ("init_std", -0.02, {}), ("init_std", math.nan, {}),
    ("init_std", math.inf, {}),
    ("norm_eps", 0.0, {}), ("norm_eps", -1e-5, {}), ("norm_eps", math.nan, {}),
    ("rope_theta", 0.0, {"positional": "rope"}), ("rope_theta", -1.0, {"positional": "rope"}),
    ("rope_theta", math.inf, {"positional": "rope"}),
    ("rope_theta", math.nan, {"positional": "rope"}),
]


@pytest.mark.parametrize("field,value,other", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_value_names_the_field_and_the_range(field, value, other):
    expect = rf"^model\.{field}: must be (an integer from \d+ to \d+|a finite number > 0)"
    with pytest.raises(ConfigError, match=expect) as err:
        ModelConfig(**{field: value, **other})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=rf"model\.{field}"):  # as read from a config file
        from_dict(ModelConfig, {field: value, **other}, "model")


def test_caps_allow_real_models():
    """Llama-3-405B's shape and a 256k vocabulary are inside the caps."""
    cfg = ModelConfig(d_model=16384, n_layer=126, n_head=128, n_kv_head=8, d_ff=53248,
                      context_length=131072, vocab_size=256_000, positional="rope",
                      rope_theta=500000.0, norm_eps=1e-5, init_std=0.02)
    assert cfg.dim_head == 128
    assert all(MAX_SIZES[k] >= getattr(cfg, k) for k in ("d_model", "n_layer", "context_length"))


def test_rope_theta_is_checked_only_where_it_applies():
    assert ModelConfig(positional="learned", rope_theta=0.0).rope_theta == 0.0
