"""train.parallel (DDP, FSDP2 with sharded DCP checkpoints) with two CPU processes (gloo):
the same weights as one process on the same global batch; sharded checkpoints resume on two
processes and on one."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.modeldir import load_model_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, parallel: str, steps: int = 4, stop: int = 0, resume: bool = False,
         procs: int = 2) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = [str(HERE / "parallel_worker.py"), str(out), parallel, str(steps), str(stop),
              "1" if resume else "0"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(_free_port()), *worker]
    else:
        env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        cmd = [sys.executable, *worker]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
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
    weights = _run(out, "fsdp")
    assert [p.name for p in sorted((out / "checkpoints").glob("*.dcp"))] == \
        ["step_0000002.dcp", "step_0000004.dcp"]  # sharded checkpoints, the newest two
    return weights


def test_ddp_and_fsdp_equal_one_process(tmp_path, one_process, fsdp_whole):
    _close(_run(tmp_path / "ddp", "ddp"), one_process)
    _close(fsdp_whole, one_process)


def test_fsdp_checkpoint_resumes_on_two_and_on_one_process(tmp_path, one_process, fsdp_whole):
    cut = tmp_path / "cut"
    _run(cut, "fsdp", stop=2)  # killed after step 2
    assert [p.name for p in (cut / "checkpoints").glob("*.dcp")] == ["step_0000002.dcp"]
    shutil.copytree(cut, tmp_path / "cut1")
    resumed = _run(cut, "fsdp", resume=True)
    for k in fsdp_whole:  # the same processes, the same shards: exactly
        assert torch.equal(resumed[k], fsdp_whole[k]), k
    # one process reads the two processes' shards and goes on with the whole batch
    _close(_run(tmp_path / "cut1", "fsdp", resume=True, procs=1), one_process)


def test_lmforge_train_on_two_nodes_with_fsdp(tmp_path):
    """``torchrun --nnodes 2 --rdzv-backend c10d`` twice on one machine (two "nodes" of one
    process each) runs ``lmforge train`` with FSDP: sharded checkpoints, and rank 0 writes an
    ordinary model directory that loads and generates."""
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 200, encoding="utf-8")
    cfg = tmp_path / "fsdp.toml"
    cfg.write_text(
        f'out_dir = "{tmp_path / "out"}"\n[data]\npath = "{text}"\n'
        "[model]\nd_model = 32\nn_layer = 2\nn_head = 2\ncontext_length = 32\n"
        "[train]\nmax_steps = 6\nbatch_size = 4\neval_every = 0\ncheckpoint_every = 3\n"
        'progress = false\ndtype = "float32"\nparallel = "fsdp"\n'
        'activation_checkpointing = "blocks"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    logs = [open(tmp_path / f"node{rank}.log", "w") for rank in (0, 1)]  # (not pipes: a full
    port = _free_port()  # for the rendezvous
    nodes = [subprocess.Popen(  # pipe buffer would block a node)
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
         "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
         "--rdzv_id", f"lmforge-test-{port}", "-m", "lmforge", "train", str(cfg)],
        env=env, stdout=logs[rank], stderr=subprocess.STDOUT) for rank in (0, 1)]
    try:
        codes = [p.wait(timeout=300) for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    for rank, code in enumerate(codes):
        logs[rank].close()
        assert code == 0, (tmp_path / f"node{rank}.log").read_text()[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "checkpoints").glob("*.dcp")) == \
        ["step_0000003.dcp", "step_0000006.dcp"]
    loaded = load_model_dir(out)
    assert loaded.model.backbone.layers[1].attn.q_proj.weight.abs().sum() > 0
    res = subprocess.run([sys.executable, "-m", "lmforge", "generate", str(out), "--prompt",
                          "to be", "--max-new-tokens", "5", "--greedy"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("to be"), res.stderr
