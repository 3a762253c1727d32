"""Cost of every registered attention backend against sequence length: forward and
forward+backward time and peak memory of one attention layer (d_model 64, 2 heads, batch 1),
with ratios against ``fused`` (torch's scaled_dot_product_attention) and a log-log plot.

    python bench/attention_cost.py [--lengths 512,1024,2048,4096,8192,16384] [--causal]
        [--backends lsh,performer,...] [--budget-mb 4096] [--time-limit 120] [--device cpu]
        [--window 256] [--repeats 3] [--threads 1]

Each (backend, length) runs in a fresh subprocess, so its memory is its own:

* memory on CPU = peak resident set size of that process (``ru_maxrss``) minus its RSS just
  before the first forward, i.e. what the forward+backward added at its peak (activations,
  scores, gradients, allocator slack; torch's CPU allocator returns large blocks to the OS,
  so this is close to the live peak). On CUDA = ``torch.cuda.max_memory_allocated`` minus the
  allocation before the first forward.
* the budget: on CPU the case process gets an address-space limit (RLIMIT_AS) of its size
  before the run plus 1.5 x the budget + 1 GiB, so a case far over budget fails to allocate
  instead of swapping the machine; a case whose peak exceeds ``--budget-mb`` is "over budget", and longer
  lengths of that backend are skipped. The table reports, per backend, the first length that
  did not fit (memory or ``--time-limit`` seconds per case).
* time = median of ``--repeats`` calls after one warm-up call, forward under no_grad and
  forward+backward (of out.sum()) separately.

Backends: all registered at run time (lmforge's and any registered by imported plugins);
``auto`` is skipped (it is ``fused`` or ``explicit``). ``sliding_window`` uses
``--window``; backends with no causal form are skipped with ``--causal``. Settings are each
backend's defaults. Writes bench/results/attention_cost_<device>[_causal].{log,json,png}.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine, rss_mib, table
from lmforge.blocks import (
    ATTENTION_BACKENDS,
    AttentionOptions,
    MultiHeadAttention,
    backend_settings,
)

RESULTS = ROOT / "bench" / "results"


def vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run_case(backend: str, length: int, args) -> dict:
    """One (backend, length) in this process: times and the peak memory of the run."""
    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    options = AttentionOptions(window=args.window if backend == "sliding_window" else 0,
                               settings=backend_settings(backend, None))
    layer = MultiHeadAttention(args.d_model, args.heads, backend=backend, options=options,
                               context_length=length).to(dev)
    x = torch.randn(1, length, args.d_model, device=dev, requires_grad=True)
    if dev.type == "cuda":
        sync = torch.cuda.synchronize
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        sync = lambda: None
        torch.ones(256, 256) @ torch.ones(256, 256)  # start the thread pool before the limit
        base = rss_mib()
        limit = vm_bytes() + int((1.5 * args.budget_mb + 1024) * 2**20)  # + 1 GiB: stacks
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def forward():
        with torch.no_grad():
            layer(x, is_causal=args.causal)
        sync()

    def forward_backward():
        layer(x, is_causal=args.causal).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)
        sync()

    fwd = median_time(forward, args.repeats)
    both = median_time(forward_backward, args.repeats)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"backend": backend, "length": length, "forward_s": fwd, "fwd_bwd_s": both,
            "peak_mib": peak, "status": "ok" if peak <= args.budget_mb else "over budget"}


def spawn(backend: str, length: int, args) -> dict:
    """run_case in a fresh process, with the time limit; failures become a status."""
    cmd = [sys.executable, __file__, "--worker", backend, "--lengths", str(length)]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("worker", "lengths", "backends", "causal", "out")]
    cmd += ["--causal"] if args.causal else []
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time_limit,
                           check=False)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "length": length, "status": f"over {args.time_limit}s"}
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["?"])[-1]
        status = "over budget" if "alloc" in err.lower() or "memory" in err.lower() \
            else f"failed: {err[:80]}"
        return {"backend": backend, "length": length, "status": status}
    return json.loads(p.stdout.strip().splitlines()[-1])


def backends_to_run(args) -> list[str]:
    names = args.backends.split(",") if args.backends else sorted(ATTENTION_BACKENDS)
    names = [n for n in names if n != "auto"]
    if args.causal:
        names = [n for n in names if ATTENTION_BACKENDS[n].causal]
    return sorted(names, key=lambda n: (n != "fused", n))


def report(results: list[dict], lengths: list[int], args) -> str:
    by = {(r["backend"], r["length"]): r for r in results}
    names = list(dict.fromkeys(r["backend"] for r in results))
    fmt = lambda r, key, f: f.format(r[key]) if r and key in r else "-"
    rows, ratio_rows, stops = [], [], []
    for n in names:
        for L in lengths:
            r = by.get((n, L))
            rows.append([n, L, fmt(r, "forward_s", "{:.4f}"), fmt(r, "fwd_bwd_s", "{:.4f}"),
                         fmt(r, "peak_mib", "{:.1f}"), r["status"] if r else "skipped"])
            f = by.get(("fused", L))
            if r and f and "fwd_bwd_s" in r and "fwd_bwd_s" in f:
                ratio_rows.append([n, L, f"{r['forward_s'] / f['forward_s']:.2f}",
                                   f"{r['fwd_bwd_s'] / f['fwd_bwd_s']:.2f}",
                                   f"{r['peak_mib'] / max(f['peak_mib'], 1e-3):.2f}"])
        bad = [L for L in lengths if (r := by.get((n, L))) is None or r["status"] != "ok"]
        stops.append([n, bad[0] if bad else f"fits all (<= {lengths[-1]})"])
    head = (f"attention_cost: d_model {args.d_model}, {args.heads} heads, batch 1, "
            f"{'causal' if args.causal else 'bidirectional'}, device {args.device}, "
            f"budget {args.budget_mb} MiB, time limit {args.time_limit}s/case\n{machine()}\n")
    return "\n\n".join([head + table(["backend", "T", "forward s", "fwd+bwd s", "peak MiB",
                                      "status"], rows),
                        "ratios to fused (time fwd, time fwd+bwd, memory):\n" + table(
                            ["backend", "T", "fwd x", "fwd+bwd x", "memory x"], ratio_rows),
                        "first length that does not fit:\n" + table(["backend", "stops at"],
                                                                     stops)])


def plot(results: list[dict], path: Path) -> None:
    from lmforge.viz.figure import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for n in dict.fromkeys(r["backend"] for r in results):
        ok = [r for r in results if r["backend"] == n and "fwd_bwd_s" in r]
        if not ok:
            continue
        ls = [r["length"] for r in ok]
        axes[0].plot(ls, [r["fwd_bwd_s"] for r in ok], marker="o", label=n)
        axes[1].plot(ls, [max(r["peak_mib"], 0.1) for r in ok], marker="o", label=n)
    for ax, what in zip(axes, ("forward+backward time (s)", "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--backends", default="", help="comma list (default: all registered)")
    ap.add_argument("--causal", action="store_true", help="decoder layers (causal mask)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--window", type=int, default=256, help="sliding_window's window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--budget-mb", type=float, default=4096)
    ap.add_argument("--time-limit", type=float, default=120, help="seconds per case")
    ap.add_argument("--out", default="", help="output stem (default bench/results/...)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.worker:
        print(json.dumps(run_case(args.worker, lengths[0], args)))
        return
    results = []
    for n in backends_to_run(args):
        for L in lengths:
            r = spawn(n, L, args)
            results.append(r)
            print(f"{n:>15} T={L:>6}: {r.get('status')} {r.get('fwd_bwd_s', '')}", flush=True)
            if r["status"] != "ok":
                break  # longer lengths only cost more
    text = report(results, lengths, args)
    print(text)
    stem = Path(args.out) if args.out else RESULTS / (
        f"attention_cost_{args.device}{'_causal' if args.causal else ''}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".log").write_text(text + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"args": vars(args), "results": results},
                                                    indent=1))
    plot(results, stem.with_suffix(".png"))
    print(f"wrote {stem}.log/.json/.png")


if __name__ == "__main__":
    main()
