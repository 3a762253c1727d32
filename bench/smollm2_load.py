"""Loading the imported SmolLM2-135M-Instruct: time to first token and peak resident memory,
each measured in a fresh Python process (nothing cached in the process; the file system cache
is warm after the first run). The child process imports the library, loads the model
directory (``load_model_dir``; float32 weights are memory-mapped, a cast reads them tensor by
tensor), renders the chat prompt and generates one greedy token. transformers loading the same
weights (the directory exported with ``export_hf``) is measured the same way for reference.

    python bench/smollm2_load.py [--repeats 3] [--model-dir runs/smollm2]
    python bench/smollm2_load.py --quick           # one process per row
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import table  # noqa: E402
from bench.smollm2_common import ROOT, hf_dir, model_dir  # noqa: E402

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
kind, path, dtype = {kind!r}, {path!r}, {dtype!r}
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if kind == "lmforge":
    from lmforge.inference import GenerationConfig, generate
    from lmforge.modeldir import load_model_dir
    from bench.smollm2_common import chat_prompt_ids
    t_import = time.perf_counter()
    lm = load_model_dir(path, dtype=None if dtype == "float32" else dtype)
    t_load = time.perf_counter()
    rss_load = rss()
    x = torch.tensor([chat_prompt_ids(lm)])
    tok = generate(lm.model, x, GenerationConfig(max_new_tokens=1, temperature=0))
    text = lm.tokenizer.decode(tok[0].tolist())
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    t_import = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    t_load = time.perf_counter()
    rss_load = rss()
    from bench.smollm2_common import QUESTION
    prompt = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
              "Hugging Face<|im_end|>\n<|im_start|>user\n" + QUESTION +
              "<|im_end|>\n<|im_start|>assistant\n")
    x = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        tok = model.generate(x, max_new_tokens=1, do_sample=False, pad_token_id=0)[:, x.shape[1]:]
    text = tokenizer.decode(tok[0])
t_first = time.perf_counter()
print(json.dumps({{"import_s": t_import - t0, "load_s": t_load - t_import,
                  "first_token_s": t_first - t_load, "ttft_s": t_first - t0,
                  "rss_after_load_mb": rss_load, "peak_rss_mb": rss(), "token": text}}))
"""


def measure(kind: str, path: Path, dtype: str, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), threads=threads, kind=kind, path=str(path), dtype=dtype)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per row (median)")
    ap.add_argument("--quick", action="store_true", help="one process per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model-dir", help="imported SmolLM2 directory (default runs/smollm2)")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    path = model_dir(args.model_dir)
    hf = hf_dir(path)
    rows = []
    for kind, where in (("lmforge", path), ("transformers", hf)):
        for dtype in ("float32", "bfloat16"):
            runs = sorted((measure(kind, where, dtype, args.threads) for _ in range(repeats)),
                          key=lambda r: r["ttft_s"])
            r = runs[len(runs) // 2]
            rows.append([kind, dtype, f"{r['import_s']:.2f} s", f"{r['load_s']:.2f} s",
                         f"{r['first_token_s']:.2f} s", f"{r['ttft_s']:.2f} s",
                         f"{r['rss_after_load_mb']:.0f} MB", f"{r['peak_rss_mb']:.0f} MB",
                         repr(r["token"])])
    print(f"SmolLM2-135M-Instruct imported from the Q4_1 GGUF ({path}); fresh process per "
          f"measurement, median of {repeats}, {args.threads} thread(s); the prompt is the chat-"
          "templated question (37 tokens)")
    print(table(["library", "dtype", "import libs", "load", "prefill + 1 token",
                 "time to first token", "RSS after load", "peak RSS", "first token"], rows))
    print("time to first token counts from the start of the process (Python start-up excluded); "
          "peak RSS includes the libraries (torch alone is ~200 MB).")


if __name__ == "__main__":
    main()
