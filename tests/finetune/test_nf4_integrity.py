"""QLoRA's streaming loader (load_model_dir_nf4) applies the same integrity checks as
load_model_dir: the sha256 meta.json records, checked before anything is read, and the
NaN/infinity screen on every tensor as it is read (quantised projections and the rest)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.errors import CheckpointError
from lmforge.finetune.nf4 import load_model_dir_nf4
from lmforge.models import ModelConfig, build_model
from lmforge.modeldir import load_model_dir, save_model_dir, write_model_dir


@pytest.fixture
def model_dir(tmp_path):
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate("abcdefgh ")}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=16, d_model=64, n_layer=1, n_head=2, context_length=16)
    return save_model_dir(tmp_path / "m", build_model(cfg).eval(), tok)


def test_intact_directory_loads(model_dir):
    lm, report = load_model_dir_nf4(model_dir)
    assert report.layers and lm.model(torch.tensor([[1, 2, 3]])).isfinite().all()


def test_a_flipped_byte_is_the_sha256_error(model_dir):
    f = model_dir / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # in the data area: the header still parses, only the hash can tell
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256 recorded in meta.json"):
        load_model_dir(model_dir)
    with pytest.raises(CheckpointError, match="does not match the sha256 recorded in meta.json"):
        load_model_dir_nf4(model_dir)


@pytest.mark.parametrize("quantised", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(model_dir, quantised, bad):
    lm = load_model_dir(model_dir)
    tensors = {k: v.clone() for k, v in lm.model.state_dict().items()
               if k not in lm.model.tied_keys()}
    name = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 2
                and ("_proj" in k) == quantised)
    tensors[name].view(-1)[5] = bad
    write_model_dir(model_dir, lm.config, tensors, lm.tokenizer)  # sha256 matches: screen decides
    with pytest.raises(CheckpointError, match=f"tensor '{name}' holds 1 NaN or infinite"):
        load_model_dir_nf4(model_dir)
