"""train.parallel (DDP, FSDP2 with sharded DCP checkpoints) with two CPU processes (gloo):
the same weights as one process on the same global batch; sharded checkpoints resume on two
processes and on one."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
pytestmark = pytest.mark.slow


def _run(out: Path, parallel: str, steps: int = 4, stop: int = 0, resume: bool = False,
         procs: int = 2, port: int = 29531) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = [str(HERE / "parallel_worker.py"), str(out), parallel, str(steps), str(stop),
              "1" if resume else "0"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(port), *worker]
    else:
        env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        cmd = [sys.executable, *worker]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_file(str(out / "final.safetensors"))


def _close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("one"), "ddp", procs=1)


@pytest.fixture(scope="module")
def fsdp_whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    weights = _run(out, "fsdp", port=29533)
    assert [p.name for p in sorted((out / "checkpoints").glob("*.dcp"))] == \
        ["step_0000002.dcp", "step_0000004.dcp"]  # sharded checkpoints, the newest two
    return weights


def test_ddp_and_fsdp_equal_one_process(tmp_path, one_process, fsdp_whole):
    _close(_run(tmp_path / "ddp", "ddp", port=29532), one_process)
    _close(fsdp_whole, one_process)


def test_fsdp_checkpoint_resumes_on_two_and_on_one_process(tmp_path, one_process, fsdp_whole):
    cut = tmp_path / "cut"
    _run(cut, "fsdp", stop=2, port=29534)  # killed after step 2
    assert [p.name for p in (cut / "checkpoints").glob("*.dcp")] == ["step_0000002.dcp"]
    shutil.copytree(cut, tmp_path / "cut1")
    resumed = _run(cut, "fsdp", resume=True, port=29535)
    for k in fsdp_whole:  # the same processes, the same shards: exactly
        assert torch.equal(resumed[k], fsdp_whole[k]), k
    # one process reads the two processes' shards and goes on with the whole batch
    _close(_run(tmp_path / "cut1", "fsdp", resume=True, procs=1), one_process)
