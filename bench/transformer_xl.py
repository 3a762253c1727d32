"""Transformer-XL: character-level perplexity on long text against memory length, at a fixed
segment length, and generation speed with the memory.

    python bench/transformer_xl.py [--segment 128] [--train-memory 128]
        [--memories 0,32,64,128,256,512] [--steps 1500] [--batch 16] [--d-model 128]
        [--n-layer 4] [--corpus-bytes 2500000] [--eval-chars 100000] [--gen-tokens 512]
        [--device cpu] [--tiny]

Corpus: the top-level ``*.py`` files of the Python standard library (``Lib``, found via
``sysconfig.get_paths()["stdlib"]``), concatenated in name order; characters are the tokens.
The last 10% is held out. One model (``positional = "relative"``, ``memory_length =
--train-memory``) is trained on contiguous streams of segments of ``--segment`` characters,
with its memory carried between steps, as ``lmforge train`` does; the held-out text is then
read as consecutive segments with memories of each length in ``--memories`` (XL evaluates
with longer memories than it trained with), and bits per character and perplexity reported.
Memory 0 = each segment alone. Generation: tokens/s of ``--gen-tokens`` sampled tokens with the
memory (the prompt: the first segment of held-out text).

Writes bench/results/transformer_xl_<device>.json. ``--tiny`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmforge.data import stdlib_corpus_files  # noqa: E402
from lmforge.data.streams import stream_batch  # noqa: E402
from lmforge.evaluation.perplexity import segment_nll  # noqa: E402
from lmforge.inference.generate import GenerationConfig, generate  # noqa: E402
from lmforge.models.causal_lm import CausalLM  # noqa: E402
from lmforge.models.config import ModelConfig  # noqa: E402
from lmforge.tasks.lm import SegmentObjective  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def corpus(max_bytes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(train ids, held-out ids, vocabulary size) of the concatenated stdlib sources."""
    text = "".join(p.read_text(encoding="utf-8") for p in stdlib_corpus_files(max_bytes))
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:], len(chars)


def train(args, train_ids: np.ndarray, vocab: int) -> CausalLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, d_model=args.d_model, n_head=args.n_head,
                      n_layer=args.n_layer, context_length=args.segment, positional="relative",
                      memory_length=args.train_memory, dropout=0.0)
    model = CausalLM(cfg).to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    objective = SegmentObjective()
    t0 = time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y, first = (t.to(args.device) for t in stream_batch(train_ids, args.batch, args.segment, step))
        loss = objective(model, (x, y, first))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f} s)")
    return model.eval()


def generation_speed(model: CausalLM, prompt: torch.Tensor, n: int) -> float:
    cfg = GenerationConfig(max_new_tokens=n, temperature=1.0, top_k=20, seed=0)
    t0 = time.perf_counter()
    out = generate(model, prompt, cfg)
    return out.shape[1] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segment", type=int, default=128)
    ap.add_argument("--train-memory", type=int, default=128)
    ap.add_argument("--memories", default="0,32,64,128,256,512")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--corpus-bytes", type=int, default=2_500_000)
    ap.add_argument("--eval-chars", type=int, default=100_000)
    ap.add_argument("--gen-tokens", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true", help="smoke run: a few steps of a tiny model")
    args = ap.parse_args()
    if args.tiny:
        args.segment, args.train_memory, args.memories = 16, 16, "0,8,16,32"
        args.steps, args.batch, args.d_model, args.n_head, args.n_layer = 10, 4, 32, 2, 2
        args.corpus_bytes, args.eval_chars, args.gen_tokens = 200_000, 400, 16
    train_ids, val_ids, vocab = corpus(args.corpus_bytes)
    print(f"corpus: {len(train_ids):,} training / {len(val_ids):,} held-out characters, "
          f"vocabulary {vocab}")
    model = train(args, train_ids, vocab)
    held = val_ids[:args.eval_chars].tolist()
    rows = []
    print(f"\nsegment {args.segment}, trained with memory {args.train_memory}")
    print(f"{'memory':>7} {'bits/char':>10} {'perplexity':>11} {'s':>7}")
    for m in (int(v) for v in args.memories.split(",")):
        t0 = time.perf_counter()
        nll, n = segment_nll(model, held, args.segment, memory_length=m)
        row = {"memory": m, "bits_per_char": nll / n / math.log(2),
               "perplexity": math.exp(nll / n), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{m:>7} {row['bits_per_char']:>10.4f} {row['perplexity']:>11.3f} "
              f"{row['seconds']:>7.1f}")
    prompt = torch.tensor([held[:args.segment]], device=args.device)
    speed = generation_speed(model, prompt, args.gen_tokens)
    print(f"\ngeneration with memory {args.train_memory}: {speed:.1f} tokens/s "
          f"({args.gen_tokens} tokens, batch 1)")
    RESULTS.mkdir(exist_ok=True)
    name = "transformer_xl_" + args.device.split(":")[0] + ("_tiny" if args.tiny else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"args": vars(args), "rows": rows, "generation_tokens_per_s": speed}, indent=1))


if __name__ == "__main__":
    main()
