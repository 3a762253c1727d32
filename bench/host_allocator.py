"""Resident memory and time of a long CPU training loop under each host memory allocator.

The loop is the LRA model's (2 layers, width 64, 2 heads, feed-forward 128, longformer
attention, batch 32 of 200-502 tokens drawn per step, right padding; forward, backward,
AdamW), the case where glibc's heap grows step after step. Each setting runs in its own
process, one after another:

- glibc's defaults; glibc with ``malloc_trim(0)`` every 20 and every 100 steps; glibc with a
  fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``, 1 MiB and 128 KiB: every larger block is
  mapped and unmapped, so freed blocks go back to the system at once);
- jemalloc and tcmalloc through ``LD_PRELOAD`` where installed (Debian: ``libjemalloc2``,
  ``libtcmalloc-minimal4``); a missing one is reported, not run.

    python bench/host_allocator.py [--steps 150]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, rss_mib, table

LIBS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
SETTINGS = [  # (name, environment, malloc_trim every N steps)
    ("glibc defaults", {}, 0),
    ("glibc, malloc_trim(0) every 20 steps", {}, 20),
    ("glibc, malloc_trim(0) every 100 steps", {}, 100),
    ("glibc, MALLOC_MMAP_THRESHOLD_=1048576", {"MALLOC_MMAP_THRESHOLD_": "1048576"}, 0),
    ("glibc, MALLOC_MMAP_THRESHOLD_=131072", {"MALLOC_MMAP_THRESHOLD_": "131072"}, 0),
    ("jemalloc (LD_PRELOAD)", {"LD_PRELOAD": LIBS["jemalloc"]}, 0),
    ("tcmalloc (LD_PRELOAD)", {"LD_PRELOAD": LIBS["tcmalloc"]}, 0),
]


def child(steps: int, trim_every: int) -> None:
    """The training loop; prints 'RSS at every 25th step | peak | seconds'."""
    import torch

    from lmforge.models import ModelConfig, build_model

    trim = ctypes.CDLL("libc.so.6").malloc_trim if trim_every else None
    cfg = ModelConfig(arch="encoder", vocab_size=22, context_length=502, d_model=64, n_layer=2,
                      n_head=2, d_ff=128, attention="longformer", heads="mlm", pooler=False,
                      attention_options={"local_window": 64, "global_tokens": [0]})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters())
    rng, trace, peak, t0 = random.Random(0), [], 0.0, time.perf_counter()
    for step in range(1, steps + 1):
        t = rng.randint(200, 502)
        x = torch.randint(0, 22, (32, t))
        pad = torch.ones(32, t, dtype=torch.bool)
        for i in range(32):
            pad[i, rng.randint(t // 2, t):] = False
        out = model(x, padding_mask=pad)
        (out[0] if isinstance(out, tuple) else out).float().mean().backward()
        opt.step()
        opt.zero_grad()
        if trim is not None and step % trim_every == 0:
            trim(0)
        peak = max(peak, rss_mib())
        if step % 25 == 0:
            trace.append(f"{rss_mib():,.0f}")
    print(f"{' '.join(trace)}|{peak:,.0f} MiB|{time.perf_counter() - t0:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.steps, args.child)
        return
    rows, base = [], None
    for name, env, trim_every in SETTINGS:
        lib = env.get("LD_PRELOAD")
        if lib and not Path(lib).exists():
            rows.append([name, f"not installed ({lib})", "", ""])
            continue
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps),
                              "--child", str(trim_every)], env=dict(os.environ, **env),
                             capture_output=True, text=True, check=True).stdout
        trace, peak, secs = out.strip().splitlines()[-1].split("|")
        base = base or float(secs)
        rows.append([name, trace, peak, f"{secs} s ({float(secs) / base:.2f}x)"])
        print(name, trace, peak, secs, flush=True)
    print(f"LRA model, longformer, batch 32 x 200-502 tokens, {args.steps} steps of forward, "
          "backward and AdamW")
    print(machine())
    print(table(["allocator", "RSS (MiB) every 25 steps", "peak RSS", "time"], rows))


if __name__ == "__main__":
    main()
