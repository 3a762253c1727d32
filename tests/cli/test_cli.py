"""The command line end to end on a tiny config, and its messages for bad input."""

import json
from pathlib import Path

import pytest

from lmforge.cli.main import main


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "corpus.txt"
    lines = [f"the {a} {b} sat on the {c} mat.\n" for a in ("cat", "dog", "bird")
             for b in ("big", "small", "red", "old") for c in ("blue", "green", "soft")]
    p.write_text("".join(lines) * 20, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text) -> Path:
    root = tmp_path_factory.mktemp("run")
    cfg = root / "tiny.toml"
    cfg.write_text(
        f'out_dir = "{root / "model"}"\nseed = 7\n'
        f'[data]\npath = "{text}"\n'
        '[tokenizer]\nkind = "char"\n'
        "[model]\nd_model = 48\nn_layer = 2\nn_head = 4\ncontext_length = 48\n"
        "[train]\nmax_steps = 300\nbatch_size = 16\nlr = 3e-3\neval_every = 100\n"
        "checkpoint_every = 100\neval_batches = 4\nprogress = false\nwarmup_steps = 10\n",
        encoding="utf-8")
    assert main(["train", str(cfg)]) == 0
    return root / "model"


def test_train_writes_a_model_directory(trained):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "meta.json", "run.toml",
                 "metrics.jsonl", "metrics.csv", "loss.png"):
        assert (trained / name).is_file(), name
    meta = json.loads((trained / "meta.json").read_text())
    assert meta["training"]["step"] == 300
    assert meta["training"]["val_loss"] < 1.2  # the corpus is very repetitive


def test_generate_greedy_continues_the_pattern(trained, capsys):
    assert main(["generate", str(trained), "--prompt", "the cat big sat on the blue", "--greedy",
                 "--max-new-tokens", "12", "--stop", "\n"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cat big sat on the blue")
    assert out.rstrip("\n").endswith("blue mat.")  # learned the sentence frame
    assert out.count("\n") == 1  # cut at the stop string


def test_generate_is_seeded(trained, capsys):
    args = ["generate", str(trained), "--prompt", "the ", "--seed", "3", "--max-new-tokens", "30",
            "--temperature", "1.0", "--top-k", "10", "--top-p", "0.9"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first


def test_eval_and_info(trained, text, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trained), "--data", str(text), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["perplexity"] < 3.0 and res["n_chars"] == len(text.read_text())
    assert res["bits_per_char"] == pytest.approx(res["bits_per_byte"])  # ASCII text
    assert main(["info", str(trained)]) == 0
    shown = capsys.readouterr().out
    assert "2 layers, d_model 48" in shown and "training          300 steps" in shown


def test_tokenizer_train_reports_compression(text, tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", str(text), "--kind", "bpe", "--vocab-size", "300",
                 "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert out.is_file() and "chars per token" in shown
    cpt = float(shown.split("chars per token")[1].split()[0])
    assert cpt > 2.0


def test_resume_continues_to_new_max_steps(trained, capsys):
    cfg = trained.parent / "tiny.toml"
    assert main(["train", str(cfg), "--resume", "--set", "train.max_steps=310"]) == 0
    assert json.loads((trained / "meta.json").read_text())["training"]["step"] == 310


def run_err(capsys, args) -> str:
    assert main(args) == 2
    return capsys.readouterr().err


def test_bad_inputs_have_clear_messages(trained, tmp_path, capsys):
    cfg = trained.parent / "tiny.toml"
    missing = tmp_path / "nope.txt"
    err = run_err(capsys, ["train", str(cfg), "--set", f'data.path="{missing}"',
                           "--set", f'out_dir="{tmp_path / "o1"}"'])
    assert str(missing) in err and "does not exist" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    err = run_err(capsys, ["train", str(cfg), "--set", f'data.path="{empty}"',
                           "--set", f'out_dir="{tmp_path / "o2"}"'])
    assert "empty.txt" in err and "no text" in err
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"abc\x00\x01\x02" * 100)
    err = run_err(capsys, ["train", str(cfg), "--set", f'data.path="{binary}"',
                           "--set", f'out_dir="{tmp_path / "o3"}"'])
    assert "blob.txt" in err and "binary" in err
    latin = tmp_path / "latin.txt"
    latin.write_bytes("ok line\ncaf\xe9 au lait\n".encode("latin-1"))
    err = run_err(capsys, ["train", str(cfg), "--set", f'data.path="{latin}"',
                           "--set", f'out_dir="{tmp_path / "o4"}"'])
    assert "latin.txt:2:" in err and "UTF-8" in err and "iconv" in err
    err = run_err(capsys, ["train", str(cfg), "--set", "train.lrr=1"])
    assert "unknown config key 'train.lrr'" in err and "did you mean 'lr'" in err
    err = run_err(capsys, ["train", str(cfg), "--set", 'train.lr="fast"'])
    assert "train.lr" in err and "expected a number" in err
    err = run_err(capsys, ["generate", str(trained), "--prompt", "x" * 60])
    assert "prompt is 60 tokens" in err and "context is 48" in err
    err = run_err(capsys, ["generate", str(trained), "--prompt", "a", "--top-p", "0"])
    assert "top_p" in err


def test_damaged_model_directories(trained, tmp_path, capsys):
    import shutil

    from tokenizers import Tokenizer, models

    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(500)}, unk_token="w0"))
    big.save(str(bad / "tokenizer.json"))
    err = run_err(capsys, ["generate", str(bad), "--prompt", "a"])
    assert "tokenizer.json" in err and "500 tokens" in err and "vocab_size" in err
    shutil.copy(trained / "tokenizer.json", bad / "tokenizer.json")
    w = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(w[: len(w) // 3])
    err = run_err(capsys, ["generate", str(bad), "--prompt", "a"])
    assert "model.safetensors is corrupt or truncated" in err
    err = run_err(capsys, ["info", str(tmp_path / "absent")])
    assert "does not exist" in err
