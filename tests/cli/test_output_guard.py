"""Never lose a user's work: every writer refuses to write over its inputs or over existing
work (exit code 2, one line on stderr, every pre-existing file unchanged), `--overwrite`
replaces a non-empty output but never an input, and one output directory has one writer."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.files.lock import lock_path

MODEL = "[model]\nd_model = 32\nn_layer = 1\nn_head = 2\ncontext_length = 32\n"


def _config(root: Path, text: Path, out: Path, steps: int, name: str = "tiny.toml") -> Path:
    cfg = root / name
    cfg.write_text(
        f'out_dir = "{out}"\nseed = 7\n[data]\npath = "{text}"\n[tokenizer]\nkind = "char"\n'
        f"{MODEL}[train]\nmax_steps = {steps}\nbatch_size = 4\neval_every = 1000\n"
        "checkpoint_every = 5\neval_batches = 1\nprogress = false\nwarmup_steps = 1\n",
        encoding="utf-8")
    return cfg


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny trained run (with checkpoints and run.toml) and its Hugging Face export."""
    root = tmp_path_factory.mktemp("guard")
    text = root / "corpus.txt"
    text.write_text("the cat sat on the mat.\nthe dog sat on the rug.\n" * 40, encoding="utf-8")
    run = root / "run"
    assert main(["train", str(_config(root, text, run, 5))]) == 0
    assert main(["export", str(run), "--out", str(root / "hf")]) == 0
    return root


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(capsys, root: Path, argv: list[str], match: str) -> None:
    before = checksums(root)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err, err
    assert checksums(root) == before


@pytest.mark.parametrize("argv, match", [
    (["export", "{run}", "--out", "{run}"], "is the input"),
    (["export", "{run}", "--out", "{run}", "--overwrite"], "is the input"),
    (["export", "{run}", "--out", "{run}/hf"], "is inside the input"),
    (["export", "{run}", "--out", "{hf}"], "not empty; pass --overwrite"),
    (["export", "{run}", "--out", "{corpus}"], "existing file"),
    (["import", "{hf}", "--out", "{hf}"], "is the input"),
    (["import", "{hf}", "--out", "{hf}/sub", "--overwrite"], "is inside the input"),
    (["import", "{hf}", "--out", "{run}"], "not empty; pass --overwrite"),
    (["import", "{hf}", "--out", "{corpus}"], "existing file"),
    (["average", "{run}", "{run}", "--out", "{run}"], "is the input"),
    (["average", "{run}", "{run}", "--out", "{run}", "--overwrite"], "is the input"),
    (["average", "{run}", "{run}", "--out", "{hf}"], "not empty; pass --overwrite"),
    (["tokenizer", "train", "{corpus}", "--kind", "char", "--out", "{run}/tokenizer.json",
      "--overwrite"], "inside a model directory"),
    (["tokenizer", "train", "{corpus}", "--kind", "char", "--out", "{corpus}", "--overwrite"],
     "is the input"),
    (["tokenizer", "train", "{corpus}", "--kind", "char", "--out", "{existing}"],
     "already exists"),
    (["quickstart", "--data", "{corpus}", "--out", "{run}", "--steps", "2"],
     "already holds checkpoints"),
])
def test_refusals_change_nothing(work, capsys, argv, match):
    fill = {"run": work / "run", "hf": work / "hf", "corpus": work / "corpus.txt",
            "existing": work / "tiny.toml"}
    refused(capsys, work, [a.format(**fill) for a in argv], match)


def test_sft_into_its_own_base_is_refused(work, capsys):
    cfg = work / "sft.toml"
    cfg.write_text(f'task = "sft"\nout_dir = "{work / "run"}"\n[sft]\n'
                   f'init_from = "{work / "run"}"\n', encoding="utf-8")
    refused(capsys, work / "run", ["train", str(cfg), "--overwrite"], "is the input")


def test_overwrite_replaces_a_non_empty_output_whole(work, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from before")
    assert main(["import", str(work / "hf"), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "meta.json",
                                                     "model.safetensors", "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries, no lock


def test_a_second_training_into_a_directory_in_use_fails_at_once(work, capsys, tmp_path):
    out = tmp_path / "busy"
    cfg = _config(tmp_path, work / "corpus.txt", out, 100000)
    first = subprocess.Popen([sys.executable, "-m", "lmforge", "train", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        deadline = time.time() + 120
        while not (lock_path(out).is_file() and lock_path(out).read_text().strip()):
            assert first.poll() is None and time.time() < deadline, "the first run never locked"
            time.sleep(0.2)
        t0 = time.time()
        capsys.readouterr()
        assert main(["train", str(cfg), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {first.pid}" in err and err.count("\n") == 1, err
        assert time.time() - t0 < 10
    finally:
        first.kill()
        first.wait()
    assert main(["train", str(_config(tmp_path, work / "corpus.txt", out, 2, "b.toml")),
                 "--overwrite"]) == 0  # the dead holder's lock is gone with it
