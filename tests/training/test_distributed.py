"""Data-parallel training under torchrun: two CPU processes (gloo) train one model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 300, encoding="utf-8")
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(
        f'out_dir = "{tmp_path / "out"}"\n[data]\npath = "{text}"\n'
        "[model]\nd_model = 32\nn_layer = 1\nn_head = 2\ncontext_length = 32\n"
        "[train]\nmax_steps = 40\nbatch_size = 8\neval_every = 20\ncheckpoint_every = 20\n"
        "eval_batches = 2\nprogress = false\nlr = 3e-3\ndtype = \"float32\"\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", "-m", "lmforge", "train", str(cfg)],
        env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    # two ranks x 8 sequences x 32 tokens per step
    assert meta["training"]["tokens"] == 40 * 2 * 8 * 32
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r["split"] == "train"]
    assert train[-1] < train[0] - 0.5
    assert len([r for r in rows if r["split"] == "val"]) == 2  # logged once (rank 0), not twice
