"""Perplexity of the imported SmolLM2-135M-Instruct on held-out Tiny Shakespeare (the last
``--chars`` characters of ../shared/data/tinyshakespeare/input.txt), with lmforge's evaluation
(``lmforge.evaluation.text_perplexity``: sliding windows, every token scored once) and with
transformers' ``LlamaForCausalLM`` on the same weights (the imported directory exported with
``export_hf``) scored by the same function, so the windows, stride and token ids are identical
and only the forward passes differ. The first token is predicted from ``<|endoftext|>``.

    python bench/smollm2_perplexity.py [--chars 20000] [--window 1024] [--stride 512]
    python bench/smollm2_perplexity.py --quick      # --chars 4000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.smollm2_common import ROOT, hf_dir, model_dir  # noqa: E402
from lmforge.evaluation import text_perplexity  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.tokenizers import eos_token_id  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


class HFLogits(nn.Module):
    """A transformers causal LM seen as lmforge's evaluation sees a model: ``cfg`` (the context
    length) and ``forward(ids) -> logits``."""

    def __init__(self, hf, cfg):
        super().__init__()
        self.hf, self.cfg = hf, cfg

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=idx, use_cache=False).logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chars", type=int, default=20000, help="the last N characters are scored")
    ap.add_argument("--window", type=int, default=1024, help="tokens per window")
    ap.add_argument("--stride", type=int, help="window step (default: half the window)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--quick", action="store_true", help="--chars 4000")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--model-dir", help="imported SmolLM2 directory (default runs/smollm2)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not DATA.is_file():
        sys.exit(f"{DATA} is not there")
    chars = 4000 if args.quick else args.chars
    text = DATA.read_text(encoding="utf-8")[-chars:]
    from transformers import AutoModelForCausalLM

    path = model_dir(args.model_dir)
    lm = load_model_dir(path, dtype=args.dtype)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir(path), dtype=getattr(torch, args.dtype)).eval()
    bos = eos_token_id(lm.tokenizer)  # <|endoftext|>, SmolLM2's document separator
    rows, ppl = [], {}
    for name, model in (("lmforge", lm.model), ("transformers", HFLogits(hf, lm.config))):
        t0 = time.perf_counter()
        r = text_perplexity(model, lm.tokenizer, text, stride=args.stride, context=args.window,
                            batch_size=args.batch_size, bos_id=bos)
        s = time.perf_counter() - t0
        ppl[name] = r.perplexity
        rows.append([name, f"{r.perplexity:.4g}", f"{r.loss:.4f}", f"{r.bits_per_char:.4f}",
                     f"{r.n_tokens:,}", f"{r.context} / {r.stride}", f"{s:.1f} s"])
    print(f"SmolLM2-135M-Instruct (Q4_1 GGUF, {args.dtype}) on the last {len(text):,} characters "
          f"of Tiny Shakespeare")
    print(machine())
    print(table(["model", "perplexity", "loss (nats/token)", "bits/char", "tokens scored",
                 "window / stride", "time"], rows))
    rel = abs(ppl["lmforge"] - ppl["transformers"]) / ppl["transformers"]
    print(f"perplexity lmforge {ppl['lmforge']!r}, transformers {ppl['transformers']!r}: "
          f"relative difference {rel:.1e}")


if __name__ == "__main__":
    main()
