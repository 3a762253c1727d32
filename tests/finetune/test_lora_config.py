"""One LoRA table: ``LoRAConfig`` validated once, used as ``[sft.lora]`` and ``[classify.lora]``
with errors naming the full path; the old flat keys (``lora_rank``, ..., ``sft.method``) still
load, into the new structure."""

import pytest

from lmforge.config import FieldError, dumps_toml, from_dict, to_dict
from lmforge.errors import ConfigError
from lmforge.finetune import ATTENTION_QV, LoRAConfig
from lmforge.tasks import RunConfig


def load(text: str) -> RunConfig:
    import tomllib

    return from_dict(RunConfig, tomllib.loads(text))


@pytest.mark.parametrize("kw, message", [
    (dict(rank=0), "LoRAConfig.rank: must be a positive integer, got 0"),
    (dict(rank=-2), "LoRAConfig.rank: must be a positive integer, got -2"),
    (dict(rank=True), "LoRAConfig.rank: must be a positive integer, got True"),
    (dict(rank=2.0), "LoRAConfig.rank: must be a positive integer, got 2.0"),
    (dict(alpha=0), "LoRAConfig.alpha: must be a positive number, got 0"),
    (dict(dropout=1.0), "LoRAConfig.dropout: must be in [0, 1), got 1.0"),
    (dict(dropout=-0.1), "LoRAConfig.dropout: must be in [0, 1), got -0.1"),
    (dict(targets=[]), "LoRAConfig.targets: give at least one module-name pattern"),
])
def test_lora_config_is_validated_once_in_python(kw, message):
    with pytest.raises(FieldError) as e:
        LoRAConfig(**kw)
    assert str(e.value).startswith(message)
    assert isinstance(e.value, ConfigError)


def test_lora_config_targets_are_lists():
    assert LoRAConfig().targets == list(ATTENTION_QV)
    assert LoRAConfig(targets="*.ff.up_proj").targets == ["*.ff.up_proj"]
    assert LoRAConfig(targets=("a", "b"), modules_to_save="head").modules_to_save == ["head"]


@pytest.mark.parametrize("table, key, value, message", [
    ("sft", "rank", "0", "sft.lora.rank: must be a positive integer, got 0"),
    ("sft", "dropout", "1.5", "sft.lora.dropout: must be in [0, 1), got 1.5"),
    ("classify", "alpha", "-1", "classify.lora.alpha: must be a positive number, got -1.0"),
    ("classify", "targets", "[]", "classify.lora.targets: give at least one"),
    ("sft", "rank", '"four"', "sft.lora.rank: expected an integer, got 'four'"),
])
def test_config_errors_name_the_full_path(table, key, value, message):
    task = "sft" if table == "sft" else "classify"
    with pytest.raises(ConfigError) as e:
        load(f'task = "{task}"\n[{table}.lora]\n{key} = {value}\n')
    assert str(e.value) == message or str(e.value).startswith(message)


def test_nested_tables_load_and_write_the_new_form():
    cfg = load('task = "sft"\n[sft]\nmode = "qlora"\n[sft.lora]\nrank = 4\n'
               'targets = ["*.ff.*_proj"]\n')
    assert cfg.sft.mode == "qlora"
    assert cfg.sft.lora == LoRAConfig(rank=4, targets=["*.ff.*_proj"])
    cfg = load('task = "classify"\n[classify]\nmode = "lora"\n[classify.lora]\ndropout = 0.1\n')
    assert cfg.classify.mode == "lora" and cfg.classify.lora == LoRAConfig(dropout=0.1)


def test_old_flat_keys_and_method_load_into_the_new_structure():
    old = load('task = "sft"\n[sft]\nmethod = "qlora"\nlora_rank = 4\nlora_alpha = 8\n'
               'lora_dropout = 0.05\nlora_targets = ["*.attn.*_proj"]\nmax_length = 64\n')
    assert old.sft.mode == "qlora" and old.sft.max_length == 64
    assert old.sft.lora == LoRAConfig(rank=4, alpha=8.0, dropout=0.05, targets=["*.attn.*_proj"])
    written = to_dict(old)["sft"]
    assert written["mode"] == "qlora" and "method" not in written
    assert written["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.05,
                               "targets": ["*.attn.*_proj"], "modules_to_save": []}
    assert not any(k.startswith("lora_") for k in written)
    text = dumps_toml(to_dict(old))
    assert "[sft.lora]" in text and "method" not in text
    assert load(text).sft == old.sft  # the new form reads back to the same config


def test_old_flat_keys_of_classify_and_errors_name_the_new_field():
    cfg = load('task = "classify"\n[classify]\nmode = "lora"\nlora_rank = 2\n'
               'lora_targets = ["*.attn.q_proj"]\n')
    assert cfg.classify.lora == LoRAConfig(rank=2, targets=["*.attn.q_proj"])
    with pytest.raises(ConfigError, match=r"^classify\.lora\.rank: must be a positive integer"):
        load('task = "classify"\n[classify]\nlora_rank = 0\n')
    with pytest.raises(ConfigError, match=r"sft\.lora_rank is the old name of sft\.lora\.rank "
                                          r"and both are given; keep only sft\.lora\.rank"):
        load('task = "sft"\n[sft]\nlora_rank = 2\n[sft.lora]\nrank = 4\n')
    with pytest.raises(ConfigError, match="sft.method is the old name of sft.mode"):
        load('task = "sft"\n[sft]\nmethod = "full"\nmode = "lora"\n')


def test_legacy_rewrite_leaves_the_callers_dict_alone():
    data = {"task": "sft", "sft": {"lora_rank": 4, "lora": {"alpha": 2.0}}}
    cfg = from_dict(RunConfig, data)
    assert cfg.sft.lora.rank == 4 and cfg.sft.lora.alpha == 2.0
    assert data == {"task": "sft", "sft": {"lora_rank": 4, "lora": {"alpha": 2.0}}}


def test_overrides_reach_the_nested_table():
    cfg = RunConfig.load(None, ['task="sft"', "sft.lora.rank=2", "sft.lora_alpha=3",
                                'sft.method="full"'])
    assert (cfg.sft.mode, cfg.sft.lora.rank, cfg.sft.lora.alpha) == ("full", 2, 3.0)
