"""llama.cpp's decoding speed on a GGUF file, for bench/quant_generate.py (its peer row).

Runs in the benchmark's own environment, never in lmforge's: llama-cpp-python is built from
its source distribution in a separate virtual environment (README of bench/quant_generate.py)::

    python3 -m venv ~/llamacpp-venv
    ~/llamacpp-venv/bin/pip install llama-cpp-python        # compiles llama.cpp (~20 min, 2 cores)
    ~/llamacpp-venv/bin/python bench/llama_cpp_decode.py MODEL.gguf --prompt-ids 1,2,3 --new-tokens 128

Prints one JSON line: tokens/s of greedy decoding of exactly ``--new-tokens`` tokens after the
given prompt ids (end-of-sequence ignored, as ``--ignore-eos`` does in llama.cpp), the best of
``--repeats`` runs, and llama.cpp's build info.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from llama_cpp import Llama, llama_print_system_info  # the peer's own environment

    prompt = [int(t) for t in args.prompt_ids.split(",")]
    llm = Llama(args.gguf, n_ctx=max(512, len(prompt) + args.new_tokens + 8),
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    best = float("inf")
    for _ in range(args.repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)  # prefill, counted as the other rows count it
        n = 0
        while n < args.new_tokens:
            tok = llm.sample(temp=0.0)  # greedy; EOS is not special here
            n += 1
            if n < args.new_tokens:
                llm.eval([tok])
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"tokens_per_s": args.new_tokens / best, "seconds": best,
                      "system": llama_print_system_info().decode(errors="replace").strip()}))


if __name__ == "__main__":
    main()
