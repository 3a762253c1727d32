"""Activation memory of reversible layers against ordinary ones, by depth.

    python bench/reversible_memory.py [--layers 2,4,8,16] [--d-model 256] [--seq 1024]
        [--batch 4] [--ff-chunks 1] [--device cpu] [--tiny]

For each depth, with and without ``model.reversible`` (a decoder, fp32, one forward+backward
of the next-token loss on random tokens), prints:

* saved MB: bytes of the tensors autograd keeps for the backward pass (measured exactly with
  ``torch.autograd.graph.saved_tensors_hooks``): the activation memory proper;
* peak MB: on CUDA ``torch.cuda.max_memory_allocated`` over the step minus the memory before
  it; on CPU the peak resident set of a fresh subprocess (``ru_maxrss``) minus its size before
  the step (parameters, gradients and allocator slack included);
* time of the step (the first case of a process includes one-off start-up costs) (reversible layers recompute the forward in the backward: ~1.3-1.5x).

Writes bench/results/reversible_memory_<device>.json. ``--tiny`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmforge.models.causal_lm import CausalLM  # noqa: E402
from lmforge.models.config import ModelConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def build(args, n_layer: int, reversible: bool) -> CausalLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, d_model=args.d_model, n_head=args.n_head, n_layer=n_layer,
                      context_length=args.seq, reversible=reversible, ff_chunks=args.ff_chunks,
                      positional="rope")
    return CausalLM(cfg).to(args.device)


def case(args, n_layer: int, reversible: bool) -> dict:
    """One forward+backward; saved bytes, peak memory delta, seconds."""
    model = build(args, n_layer, reversible)
    ids = torch.randint(0, 256, (args.batch, args.seq + 1), device=args.device)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"n_layer": n_layer, "reversible": reversible, "saved_mb": saved / 2**20,
            "peak_mb": peak / 2**20, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="2,4,8,16")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ff-chunks", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true", help="smoke run: d_model 32, seq 64, batch 2, "
                    "in this process (CPU peak then not per case)")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # "n_layer,reversible"
    args = ap.parse_args()
    if args.tiny:
        args.d_model, args.n_head, args.seq, args.batch = 32, 2, 64, 2
    if args.case:  # a subprocess: one measurement, as JSON on stdout
        n, rev = args.case.split(",")
        print(json.dumps(case(args, int(n), rev == "1")))
        return
    rows = []
    print(f"d_model {args.d_model}, seq {args.seq}, batch {args.batch}, ff_chunks "
          f"{args.ff_chunks}, {args.device}")
    print(f"{'layers':>6} {'reversible':>10} {'saved MB':>9} {'peak MB':>9} {'s':>7}")
    for n in (int(v) for v in args.layers.split(",")):
        for rev in (False, True):
            if args.tiny or args.device.startswith("cuda"):  # CUDA peaks reset per case
                row = case(args, n, rev)
            else:  # a fresh process per case, so ru_maxrss is this case's peak
                cmd = [sys.executable, __file__, "--case", f"{n},{int(rev)}"] + sys.argv[1:]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n:>6} {str(rev):>10} {row['saved_mb']:>9.1f} {row['peak_mb']:>9.1f} "
                  f"{row['seconds']:>7.2f}")
    RESULTS.mkdir(exist_ok=True)
    name = "reversible_memory_" + args.device.split(":")[0] + ("_tiny" if args.tiny else "")
    (RESULTS / f"{name}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
