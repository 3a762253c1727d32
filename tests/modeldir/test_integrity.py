"""Integrity of model directories: the sha256 of model.safetensors recorded in meta.json at save
and checked at load (and by `lmforge info --verify`); non-finite weights refused."""

import hashlib
import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lmforge.cli.main import main
from lmforge.errors import CheckpointError
from lmforge.models import ModelConfig, build_model
from lmforge.modeldir import load_model_dir, read_meta, save_model_dir, write_model_dir
from lmforge.modeldir.integrity import sha256_file


def _tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


@pytest.fixture
def model_dir(tmp_path):
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layer=1, n_head=2,
                      context_length=32)
    return save_model_dir(tmp_path / "m", build_model(cfg).eval(), tok)


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("the cat sat on the mat.\n" * 20, encoding="utf-8")
    return p


def _flip_last_byte(f):
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # inside the data area: the header still parses
    f.write_bytes(bytes(data))


def _one_error_line(capsys, args, *needles) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_sha256_recorded_at_save_and_checked_at_load(model_dir):
    meta = json.loads((model_dir / "meta.json").read_text())
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert meta["files"] == {"model.safetensors": digest} == read_meta(model_dir).files
    assert sha256_file(model_dir / "model.safetensors") == digest
    load_model_dir(model_dir)  # matches: loads
    _flip_last_byte(model_dir / "model.safetensors")
    for dtype in (None, "bfloat16"):
        with pytest.raises(CheckpointError, match="does not match the sha256 recorded in "
                           "meta.json"):
            load_model_dir(model_dir, dtype=dtype)


def test_a_flipped_byte_is_one_error_line(model_dir, text, capsys):
    _flip_last_byte(model_dir / "model.safetensors")
    for args in (["generate", str(model_dir), "--prompt", "a", "--max-new-tokens", "2"],
                 ["eval", str(model_dir), "--data", str(text)],
                 ["info", str(model_dir), "--verify"]):
        _one_error_line(capsys, args, "model.safetensors does not match the sha256",
                        "re-export or retrain")


def test_info_verify_says_ok(model_dir, tmp_path, capsys):
    assert main(["info", str(model_dir), "--verify", "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "integrity         ok: model.safetensors matches the sha256 in meta.json" in out
    assert json.loads((tmp_path / "i.json").read_text())["verify"]["sha256"] == "ok"
    meta = json.loads((model_dir / "meta.json").read_text())
    del meta["files"]  # a directory saved before the record existed still loads
    (model_dir / "meta.json").write_text(json.dumps(meta))
    assert main(["info", str(model_dir), "--verify"]) == 0
    assert "no sha256 recorded" in capsys.readouterr().out


def test_a_malformed_record_is_refused(model_dir):
    meta = json.loads((model_dir / "meta.json").read_text())
    meta["files"]["model.safetensors"] = "abc"
    (model_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="files.model.safetensors must be a sha256"):
        load_model_dir(model_dir)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(model_dir, bad, capsys):
    lm = load_model_dir(model_dir)
    tensors = {k: v.clone() for k, v in lm.model.state_dict().items()
               if k not in lm.model.tied_keys()}
    name = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 2)
    tensors[name].view(-1)[3] = bad
    write_model_dir(model_dir, lm.config, tensors, lm.tokenizer)  # sha256 recorded: matches
    for dtype in (None, "float16"):
        with pytest.raises(CheckpointError, match=f"tensor '{name}' holds 1 NaN or infinite"):
            load_model_dir(model_dir, dtype=dtype)
    _one_error_line(capsys, ["generate", str(model_dir), "--prompt", "a"], name, "NaN")
