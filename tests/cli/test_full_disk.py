"""A full disk, simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored so a write
past it fails with EFBIG): `lmforge train` whose checkpoint cannot fit and `lmforge export`
exit 2 with one line naming the path, no traceback, the earlier checkpoints intact and
loadable, and no temporary or half-written files left."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.files.atomic import TEMP_MARK
from lmforge.training.checkpoint import load_checkpoint

LIMITED = ("import resource, signal, sys\n"
           "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
           "n = int(sys.argv[1])\n"
           "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))\n"
           "from lmforge.cli.main import main\n"
           "sys.exit(main(sys.argv[2:]))\n")


def _limited(limit: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LIMITED, str(limit), *args],
                          capture_output=True, text=True, timeout=120)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    err = r.stderr
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk")
    (root / "t.txt").write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    cfg = root / "tiny.toml"
    cfg.write_text(
        f'out_dir = "{root / "model"}"\nseed = 1\n[data]\npath = "{root / "t.txt"}"\n'
        '[tokenizer]\nkind = "char"\n'
        "[model]\nd_model = 64\nn_layer = 2\nn_head = 2\ncontext_length = 16\n"
        "[train]\nmax_steps = 4\nbatch_size = 2\neval_every = 100\ncheckpoint_every = 2\n"
        "eval_batches = 1\nprogress = false\nwarmup_steps = 0\n", encoding="utf-8")
    assert main(["train", str(cfg)]) == 0
    return root


def _checkpoints(model: Path) -> list[Path]:
    return sorted(p for p in (model / "checkpoints").glob("*.pt") if TEMP_MARK not in p.name)


def test_train_checkpoint_past_a_full_disk(run):
    model = run / "model"
    ckpts = _checkpoints(model)
    assert ckpts, sorted(model.rglob("*"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpts}
    limit = min(p.stat().st_size for p in ckpts) // 2  # logs fit, a checkpoint does not
    args = ["train", str(run / "tiny.toml"), "--resume", "--set", "train.max_steps=8"]
    err = _one_line(_limited(limit, args), str(model))
    assert "disk full" in err, err
    for p, digest in before.items():  # the earlier checkpoints intact and loadable
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
        assert load_checkpoint(p)["step"] > 0
    r = _limited(2**40, args)  # the next run (no limit) sweeps what the failed one left
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [p for p in model.rglob("*") if TEMP_MARK in p.name]


def test_export_onto_a_full_disk(run):
    out = run / "hf"
    before = _hashes(run / "model")
    limit = (run / "model" / "model.safetensors").stat().st_size // 2
    r = _limited(limit, ["export", str(run / "model"), "--format", "hf", "--out", str(out)])
    _one_line(r, str(out))
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    assert not [p for p in run.iterdir() if TEMP_MARK in p.name]
    assert _hashes(run / "model") == before
