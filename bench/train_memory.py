"""Peak memory of SmolLM2-135M fine-tuning through `lmforge train` itself: full, LoRA and QLoRA,
each with train.activation_checkpointing = "none" and "blocks", and each with the
``--host-memory`` settings asked for (train.host_memory: ``default`` glibc heap, ``compact``).

Each case is one `lmforge train` run (task = "sft", the shipped instruction set, rows of
--seq-len tokens, batch --batch-size, --steps steps, fp32) in its own process; its peak resident
memory is the child's ru_maxrss. ``--mmap-threshold`` sets glibc's MALLOC_MMAP_THRESHOLD_ for the
runs (0 = glibc's default): large freed temporaries then go back to the system instead of
staying in the heap (see docs/finetune.md).

    python bench/train_memory.py [--steps 3] [--batch-size 4] [--seq-len 256] [--mmap-threshold 131072] \
        [--host-memory default,compact]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.smollm2_common import model_dir  # noqa: E402

CONFIG = """out_dir = "{out}"
task = "sft"
[sft]
init_from = "{base}"
mode = "{mode}"
max_length = {seq}
pack = true
val_fraction = 0.1
[sft.lora]
rank = 8
alpha = 16
targets = ["*attn.*_proj", "*.ff.*_proj"]
[train]
max_steps = {steps}
batch_size = {batch}
lr = 1e-4
warmup_steps = 0
eval_every = 0
eval_batches = 1
checkpoint_every = 0
dtype = "float32"
progress = false
activation_checkpointing = "{ckpt}"
host_memory = "{host}"
"""

PROBE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
         "sys.exit(r.returncode)")


def run_case(base: Path, mode: str, ckpt: str, host: str, args,
             tmp: Path) -> tuple[float, float]:
    out = tmp / f"{mode}-{ckpt}-{host}"
    cfg = tmp / f"{mode}-{ckpt}-{host}.toml"
    cfg.write_text(CONFIG.format(out=out, base=base, mode=mode, seq=args.seq_len, host=host,
                                 steps=args.steps, batch=args.batch_size, ckpt=ckpt))
    env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1))
    if args.mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "lmforge", "train",
                          str(cfg)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{mode}/{ckpt}/{host} failed:\n{res.stderr[-2000:]}")
    peak_kib = int(res.stdout.rsplit("PEAK", 1)[1].split()[0])
    return peak_kib / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--mmap-threshold", type=int, default=0)
    ap.add_argument("--modes", default="full,lora,qlora")
    ap.add_argument("--host-memory", default="default", help="train.host_memory settings, "
                    "comma-separated: default, compact")
    args = ap.parse_args()
    base = model_dir()
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for host in args.host_memory.split(","):
            for mode in args.modes.split(","):
                for ckpt in ("none", "blocks"):
                    peak, wall = run_case(base, mode, ckpt, host, args, Path(tmp))
                    peaks[(mode, ckpt, host)] = peak, wall
                    print(f"{mode:6s} checkpointing={ckpt:6s} host_memory={host:8s} "
                          f"peak {peak:,.0f} MiB ({wall:.0f} s)", flush=True)
    ref = peaks.get(("full", "none", "default"), peaks.get(("full", "none", "compact")))
    for (mode, ckpt, host), (peak, wall) in peaks.items():
        rows.append([mode, ckpt, host, f"{peak:,.0f} MiB",
                     f"{peak / ref[0]:.2f}x" if ref else "-", f"{wall:.0f} s"])
    print(f"\nlmforge train, SmolLM2-135M sft, batch {args.batch_size} x {args.seq_len} tokens, "
          f"{args.steps} steps, fp32, MALLOC_MMAP_THRESHOLD_={args.mmap_threshold or 'default'}")
    print(machine())
    print(table(["mode", "activation checkpointing", "host_memory", "peak RSS",
                 "vs full, none, default", "wall time"], rows))


if __name__ == "__main__":
    main()
