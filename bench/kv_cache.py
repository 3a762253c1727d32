"""KV-cache precision (``--kv-cache fp32|bf16|int8``): cache bytes per token, greedy decoding
speed, agreement of the greedy tokens with the float32 cache, and a teacher-forced perplexity
read through the cache, for one model directory.

``lmforge evaluate`` scores windows in one forward pass without a KV cache, so the cache's
precision cannot change its perplexity; the perplexity here feeds the text one token at a time
through a cache of each precision instead (the prompt part prefilled).

    python bench/kv_cache.py --model-dir runs/smollm2 [--new-tokens 64] [--threads 1]
    python bench/kv_cache.py --tiny          # a random 2-layer model: a smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from lmforge.blocks.kv_cache import KVCache, set_kv_cache_dtype  # noqa: E402
from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

KINDS = ("fp32", "bf16", "int8")
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, there was",
           "The three laws of thermodynamics state that"]
TEXT = ("The Industrial Revolution began in Great Britain in the late eighteenth century and "
        "spread to Europe and North America. It replaced hand production with machines, new "
        "chemical and iron processes, steam power and the factory system. Output grew, cities "
        "grew with it, and the working day of millions of people changed within two "
        "generations. Historians still debate its causes: coal, capital, cheap cotton, "
        "high wages, or the patent system.")


def bytes_per_token(n_layer: int, n_kv_head: int, head_dim: int) -> dict[str, int]:
    """Self-attention cache bytes per position of one sequence, by precision."""
    return {k: KVCache(n_layer, 1, n_kv_head, 1, head_dim, device="meta",
                       kv_dtype=k).bytes_per_token() for k in KINDS}


@torch.no_grad()
def cached_nll(model, ids: list[int], prefill: int) -> tuple[float, int]:
    """Summed NLL of ``ids[prefill+1:]`` fed one token at a time through the model's cache
    (the first ``prefill`` tokens prefilled together), and the number of tokens scored."""
    x = torch.tensor([ids])
    cache = model.new_cache(1, max_len=len(ids))
    logits = model(x[:, :prefill], cache=cache)[:, -1]  # (1, V)
    nll = 0.0
    for t in range(prefill, len(ids)):
        nll += float(F.cross_entropy(logits, x[:, t]))
        logits = model(x[:, t:t + 1], cache=cache)[:, -1]
    return nll, len(ids) - prefill


def load(args):
    """(model, list of prompt id tensors, text ids, label)."""
    if args.tiny:
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=64, context_length=128, d_model=64, n_layer=2, n_head=4,
                          n_kv_head=2, d_ff=128, activation="swiglu", norm="rmsnorm",
                          positional="rope", init_std=0.2)
        g = torch.Generator().manual_seed(1)
        prompts = [torch.randint(0, 64, (1, 6), generator=g) for _ in range(3)]
        return build_model(cfg).eval(), prompts, torch.randint(0, 64, (96,), generator=g).tolist(), \
            "tiny random model"
    lm = load_model_dir(args.model_dir)
    enc = lambda s: lm.tokenizer.encode(s).ids  # noqa: E731
    return lm.model.eval(), [torch.tensor([enc(p)]) for p in PROMPTS], enc(TEXT), args.model_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="runs/smollm2")
    ap.add_argument("--tiny", action="store_true", help="a random tiny model (smoke test)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the prompts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, prompts, text, label = load(args)
    prompts = prompts[:args.prompts]
    cfg = model.cfg
    sizes = bytes_per_token(cfg.n_layer, cfg.n_kv_head or cfg.n_head, cfg.dim_head)
    gen = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0)
    rows, ref = [], None
    for kind in KINDS:
        set_kv_cache_dtype(model, kind)
        generate(model, prompts[0], GenerationConfig(max_new_tokens=4, temperature=0))  # warm-up
        t0, outs = time.perf_counter(), []
        for p in prompts:
            outs.append(generate(model, p, gen)[0])
        dt = time.perf_counter() - t0
        n = sum(len(o) for o in outs)
        ref = ref or outs
        same = sum(int((o[:len(r)] == r[:len(o)]).sum()) for o, r in zip(outs, ref))
        first = [int((o != r).nonzero()[0]) if not torch.equal(o, r) else len(o)
                 for o, r in zip(outs, ref)]
        nll, scored = cached_nll(model, text, min(32, len(text) // 3))
        rows.append([kind, sizes[kind], f"{sizes[kind] * cfg.context_length / 2**20:.0f}",
                     f"{n / dt:.1f}", f"{same}/{n}", ",".join(map(str, first)),
                     f"{math.exp(nll / scored):.3f}"])
        print(" ".join(map(str, rows[-1])), file=sys.stderr, flush=True)  # progress
    set_kv_cache_dtype(model, None)
    print(f"{label}: {cfg.n_layer} layers, {cfg.n_kv_head or cfg.n_head} kv heads, head dim "
          f"{cfg.dim_head}; {len(prompts)} prompts x {args.new_tokens} greedy tokens, "
          f"{args.threads} thread(s); {machine()}")
    print(table(["kv cache", "bytes/token", "MiB at context", "tok/s", "tokens = fp32",
                 "first diff per prompt", f"cached ppl ({scored} tok)"], rows))


if __name__ == "__main__":
    main()
