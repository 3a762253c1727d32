"""Every command, given broken inputs a careless or hostile user would give it: exit code 2,
exactly one line on stderr, no traceback, and every file that existed before unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.models import ModelConfig, build_model
from lmforge.modeldir import save_model_dir
from lmforge.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny decoder directory, damaged copies of it, and bad data files."""
    r = tmp_path_factory.mktemp("sweep")
    corpus = r / "corpus.txt"
    corpus.write_text("the cat sat on the mat.\n" * 30, encoding="utf-8")
    tok = train_tokenizer([corpus], kind="char")
    model = build_model(ModelConfig(vocab_size=tok.get_vocab_size(), d_model=16, n_layer=1,
                                    n_head=2, context_length=16))
    good = save_model_dir(r / "good", model, tok, {"task": "causal-lm"})
    for name, damage in [("bad_config", ("config.json", b"{not json")),
                         ("list_config", ("config.json", b"[1, 2, 3]")),
                         ("latin1_meta", ("meta.json", "{\"task\": \"caf\xe9\"}".encode("latin-1"))),
                         ("list_meta", ("meta.json", b"[]")),
                         ("bad_tokenizer", ("tokenizer.json", b"{\"model\": 3}")),
                         ("short_weights", ("model.safetensors", b"\x01\x02"))]:
        d = r / name
        d.mkdir()
        for f in good.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        (d / damage[0]).write_bytes(damage[1])
    wide = r / "wrong_shape"  # config.json says d_model 32, the weights are 16 wide
    wide.mkdir()
    for f in good.iterdir():
        (wide / f.name).write_bytes(f.read_bytes())
    (wide / "config.json").write_text((good / "config.json").read_text().replace(
        '"d_model": 16', '"d_model": 32'), encoding="utf-8")
    huge = r / "huge_config"  # config.json asks for ~70 billion weights; the file holds 5,000
    huge.mkdir()
    for f in good.iterdir():
        (huge / f.name).write_bytes(f.read_bytes())
    (huge / "config.json").write_text((good / "config.json").read_text().replace(
        '"d_model": 16', '"d_model": 8192').replace('"n_layer": 1', '"n_layer": 80'),
        encoding="utf-8")
    (r / "fresh.toml").write_text(f'out_dir = "{r / "fresh"}"\n[data]\npath = "{corpus}"\n',
                                  encoding="utf-8")
    (r / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (r / "notes.txt").write_text("not a model\n", encoding="utf-8")
    (r / "bad.toml").write_text("[train\nmax_steps = 3\n", encoding="utf-8")
    (r / "typo.toml").write_text("[trian]\nmax_steps = 3\n", encoding="utf-8")
    return r


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CASES = [
    ["train", "{r}/missing.toml"],
    ["train", "{r}/bad.toml"],
    ["train", "{r}/typo.toml"],
    ["train", "--preset", "tiny", "--set", "data.path={r}/binary.bin", "--set", "out_dir={r}/o1"],
    ["train", "{r}/fresh.toml", "--resume"],  # nothing to resume
    ["generate", "{r}/wrong_shape", "--prompt", "a"],
    ["generate", "{r}/huge_config", "--prompt", "a"],  # refused before anything is allocated
    ["generate", "{r}/missing", "--prompt", "a"],
    ["generate", "{r}/bad_config", "--prompt", "a"],
    ["generate", "{r}/list_config", "--prompt", "a"],
    ["generate", "{r}/short_weights", "--prompt", "a"],
    ["generate", "{r}/bad_tokenizer", "--prompt", "a"],
    ["eval", "{r}/latin1_meta", "--data", "{r}/corpus.txt"],
    ["eval", "{r}/good", "--data", "{r}/binary.bin"],
    ["eval", "{r}/list_meta", "--data", "{r}/corpus.txt"],
    ["info", "{r}/notes.txt"],
    ["info", "{r}/bad_config"],
    ["import", "{r}/notes.txt", "--out", "{r}/o2"],
    ["import", "{r}/missing", "--out", "{r}/o3"],
    ["export", "{r}/bad_config", "--out", "{r}/o4"],
    ["export", "{r}/missing", "--out", "{r}/o5"],
    ["average", "{r}/good", "{r}/bad_config", "--out", "{r}/o6"],
    ["average", "{r}/good", "{r}/short_weights", "--out", "{r}/o7"],
    ["classify", "{r}/good", "--text", "a"],
    ["classify", "{r}/missing", "--text", "a"],
    ["embed", "{r}/bad_config", "--data", "{r}/corpus.txt", "--out", "{r}/o12.npz"],
    ["embed", "{r}/good", "--data", "{r}/binary.bin", "--out", "{r}/o13.npz"],
    ["translate", "{r}/good", "--text", "a"],
    ["translate", "{r}/short_weights", "--text", "a"],
    ["chat", "{r}/bad_config"],
    ["chat", "{r}/missing"],
    ["tokenizer", "train", "{r}/binary.bin", "--out", "{r}/o8.json"],
    ["tokenizer", "train", "{r}/missing.txt", "--out", "{r}/o9.json"],
    ["quickstart", "--data", "{r}/binary.bin", "--out", "{r}/o10", "--steps", "2"],
    ["quickstart", "--data", "{r}/missing", "--out", "{r}/o11", "--steps", "2"],
    # an output file that is one of the inputs: refused before anything runs
    ["eval", "{r}/good", "--data", "{r}/corpus.txt", "--json", "{r}/corpus.txt"],
    ["embed", "{r}/good", "--data", "{r}/corpus.txt", "--out", "{r}/corpus.txt"],
    ["translate", "{r}/good", "--data", "{r}/corpus.txt", "--out", "{r}/corpus.txt"],
    ["info", "{r}/good", "--json", "{r}/good/meta.json"],
]


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a[:3]).replace("{r}/", ""))
def test_bad_input_gives_one_line_and_exit_2(root, argv, capsys):
    before = _checksums(root)
    capsys.readouterr()
    code = main([a.format(r=root) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lmforge ") and "Traceback" not in err, err
    assert _checksums(root) == before
