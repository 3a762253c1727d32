"""Clean stops: SIGTERM/SIGINT during training save a checkpoint at the next step boundary,
say how to resume, restore the previous handlers, and resuming gives the same weights as a
run that was never stopped."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.training import Trainer, TrainConfig
from lmforge.training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def signalling_trainer(out, send: dict[int, int], **cfg) -> Trainer:
    """A tiny trainer whose objective sends itself signal ``send[n]`` on its n-th call."""
    calls = {"n": 0}

    def objective(m, batch):
        calls["n"] += 1
        if calls["n"] in send:
            os.kill(os.getpid(), send[calls["n"]])
        return m(batch).pow(2).mean()

    torch.manual_seed(0)
    config = TrainConfig(**{"max_steps": 20, "checkpoint_every": 0, "eval_every": 100,
                            "progress": False, "dtype": "float32", **cfg})
    return Trainer(torch.nn.Linear(4, 2), objective, lambda s, mi, r: torch.randn(3, 4),
                   config, out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_at_the_step_boundary_with_a_checkpoint(tmp_path, capfd, sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    result = signalling_trainer(tmp_path, {3: sig}).fit()
    name = signal.Signals(sig).name
    assert result.stopped_by == name and result.step == 3 and not result.stopped_early
    assert result.exit_code == 128 + sig
    ckpt = tmp_path / "checkpoints" / "step_0000003.pt"
    assert list_checkpoints(tmp_path / "checkpoints") == [ckpt]
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"lmforge: {name} received: stopping after this step with a checkpoint "
                   "(send it again to stop at once)",
                   f"stopped by {name} at step 3; checkpoint {ckpt}; resume with --resume"]
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


def test_stop_on_a_checkpoint_step_does_not_save_twice(tmp_path, capsys):
    trainer = signalling_trainer(tmp_path, {4: signal.SIGTERM}, checkpoint_every=2)
    saves = []
    trainer.on_save = lambda m, s: saves.append(s["step"])
    assert trainer.fit().step == 4
    assert saves == [2, 4]
    assert "step_0000004.pt; resume with --resume" in capsys.readouterr().err


def test_a_second_signal_interrupts_at_once(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    trainer = signalling_trainer(tmp_path, {3: signal.SIGINT, 4: signal.SIGINT})
    trainer.cfg.grad_accum = 2  # both signals arrive within step 2
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before


def test_fit_outside_the_main_thread_installs_no_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    results, errors = [], []

    def run():
        try:
            results.append(signalling_trainer(tmp_path, {}, max_steps=3).fit())
        except BaseException as e:  # signal.signal() outside the main thread: ValueError
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert errors == [] and results[0].step == 3 and results[0].stopped_by is None
    assert signal.getsignal(signal.SIGTERM) is before


def corpus(path: Path) -> Path:
    """~60 kB of real text built in the test: the standard library's own sources."""
    import argparse
    import json

    text = Path(argparse.__file__).read_text(encoding="utf-8") + \
        Path(json.decoder.__file__).read_text(encoding="utf-8")
    path.write_text(text[:60_000], encoding="utf-8")
    return path


def run_toml(path: Path, data: Path, out: Path) -> Path:
    path.write_text(
        f'out_dir = "{out}"\n[data]\npath = "{data}"\n[tokenizer]\nkind = "char"\n'
        "[model]\nd_model = 32\nn_layer = 2\nn_head = 2\ncontext_length = 32\ndropout = 0.1\n"
        "[train]\nmax_steps = 150\nbatch_size = 4\ncheckpoint_every = 0\neval_every = 50\n"
        "eval_batches = 2\nlog_every = 1\nprogress = false\ndtype = \"float32\"\n",
        encoding="utf-8")
    return path


def test_sigterm_to_lmforge_train_saves_and_resume_matches_an_uninterrupted_run(tmp_path):
    data = corpus(tmp_path / "corpus.txt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    train = [sys.executable, "-m", "lmforge", "train"]
    ref = run_toml(tmp_path / "ref.toml", data, tmp_path / "ref")
    subprocess.run(train + [str(ref)], check=True, env=env, capture_output=True)

    toml = run_toml(tmp_path / "stopped.toml", data, tmp_path / "stopped")
    proc = subprocess.Popen(train + [str(toml)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics, deadline = tmp_path / "stopped" / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text(encoding="utf-8").count('"train"') >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    m = re.search(r"stopped by SIGTERM at step (\d+); checkpoint (\S+); resume with --resume", err)
    assert m, err
    assert "Traceback" not in err
    step, ckpt = int(m.group(1)), Path(m.group(2))
    assert 5 <= step < 150 and ckpt.is_file() and ckpt.name == f"step_{step:07d}.pt"

    res = subprocess.run(train + [str(toml), "--resume"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
