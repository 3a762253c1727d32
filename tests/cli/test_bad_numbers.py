"""CLI numbers and strings out of range: exit code 2 and one line naming the flag and the allowed
range, no traceback (argparse's usage line, then its error line, for the argparse types of
lmforge.cli.arguments)."""

import argparse

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lmforge.cli.arguments import (non_empty_str, non_negative_float, non_negative_int,
                                   positive_int, probability)
from lmforge.cli.main import main
from lmforge.models import ModelConfig, build_model
from lmforge.modeldir import save_model_dir

M = "MODEL_DIR"  # argparse refuses the number before the model directory is looked at

ARGPARSE_CASES = [
    (["generate", M, "--prompt", "a", "--num-samples", "0"], "--num-samples", ">= 1"),
    (["generate", M, "--prompt", "a", "--max-new-tokens", "0"], "--max-new-tokens", ">= 1"),
    (["generate", M, "--prompt", "a", "--stop", ""], "--stop", "must not be empty"),
    (["generate", M, "--prompt", "a", "--top-k", "-1"], "--top-k", ">= 0"),
    (["eval", M, "--data", "x", "--max-chars", "-10"], "--max-chars", ">= 0"),
    (["eval", M, "--data", "x", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["eval", M, "--data", "x", "--stride", "0"], "--stride", ">= 1"),
    (["eval", M, "--data", "x", "--beam", "0"], "--beam", ">= 1"),
    (["classify", M, "--text", "a", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["translate", M, "--text", "a", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["translate", M, "--text", "a", "--max-len-ratio", "0"], "--max-len-ratio", "> 0"),
    (["embed", M, "--data", "x", "--out", "y", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["embed", M, "--data", "x", "--out", "y", "--clusters", "-2"], "--clusters", ">= 0"),
    (["chat", M, "--max-new-tokens", "0"], "--max-new-tokens", ">= 1"),
    (["quickstart", "--steps", "0"], "--steps", ">= 1"),
    (["average", "a", "b", "--out", "c", "--weights", "1", "-1"], "--weights", ">= 0"),
    (["average", "a", "b", "--out", "c", "--weights", "1", "nan"], "--weights", "finite"),
    (["generate", M, "--prompt", "a", "--num-samples", "two"], "--num-samples", "an integer"),
]


@pytest.mark.parametrize("args,flag,allowed", ARGPARSE_CASES,
                         ids=[" ".join(c[0][:1] + c[0][-2:]) for c in ARGPARSE_CASES])
def test_argparse_refuses_naming_the_flag(args, flag, allowed, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after argparse's usage line
    assert f"argument {flag}" in line and allowed in line, line


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layer=1, n_head=2,
                      context_length=32)
    return save_model_dir(tmp_path_factory.mktemp("m") / "m", build_model(cfg).eval(), tok)


@pytest.mark.parametrize("flag,value,field", [("--top-p", "2", "top_p"),
                                              ("--top-p", "0", "top_p"),
                                              ("--temperature", "-1", "temperature")])
def test_sampling_values_are_refused_in_one_line(model_dir, flag, value, field, capsys):
    for cmd in (["generate", str(model_dir), "--prompt", "a"], ["chat", str(model_dir)]):
        assert main([*cmd, flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert field in err and value in err, err


def test_average_weights_all_zero(capsys):
    assert main(["average", "a", "b", "--out", "c", "--weights", "0", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-negative weight" in err and "not all zero" in err


def test_the_types_accept_what_is_in_range():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    assert non_negative_float("0") == 0.0 and probability("1") == 1.0
    assert non_empty_str("\n") == "\n"
    for fn, text in ((positive_int, "0"), (non_negative_int, "-1"), (probability, "1.5"),
                     (probability, "0"), (non_negative_float, "inf"), (non_empty_str, "")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)
