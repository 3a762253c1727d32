"""Generation speed on a real model: SmolLM2-135M-Instruct (imported from its Q4_1 GGUF),
batch 1, greedy, 128 new tokens after the chat-templated question, lmforge against
transformers' ``generate`` on the same dequantised weights (the imported directory exported
with ``lmforge.interop.export_hf`` and loaded as ``LlamaForCausalLM``), in the same run, for
float32 and bfloat16. Neither stops at the end-of-turn token, so both make exactly N tokens.

Decoding one token reads every weight once (the tied embedding matrix as the output layer), so
memory bandwidth bounds the speed: the table gives the bytes read per token (weights + the KV
cache) and the bandwidth that speed implies.

    python bench/smollm2_generate.py [--new-tokens 128] [--repeats 3] [--model-dir runs/smollm2]
                                     [--threads N]
    python bench/smollm2_generate.py --quick        # one timed run per row
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.smollm2_common import chat_prompt_ids, hf_dir, model_dir  # noqa: E402
from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402


def weight_bytes(model) -> int:
    unique = {id(p): p for p in model.parameters()}.values()  # tied weights once
    return sum(p.numel() * p.element_size() for p in unique)


def kv_bytes_per_token(cfg, positions: float, elem: int) -> float:
    """KV cache read by one decoding step at ``positions`` cached positions (all layers)."""
    return 2 * cfg.n_layer * (cfg.n_kv_head or cfg.n_head) * cfg.dim_head * positions * elem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one timed run per row")
    ap.add_argument("--model-dir", help="imported SmolLM2 directory (default runs/smollm2)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's); on a machine "
                    "shared with other jobs, 1 avoids threads waiting on each other")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    path = model_dir(args.model_dir)
    lm = load_model_dir(path)
    ids = chat_prompt_ids(lm)
    x = torch.tensor([ids])
    n = args.new_tokens
    hf = AutoModelForCausalLM.from_pretrained(hf_dir(path), dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    ours = lm.model

    def run_hf(model):
        with torch.no_grad():
            return model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0)[:, x.shape[1]:]

    def run_ours(model):
        return generate(model, x, GenerationConfig(max_new_tokens=n, temperature=0))

    rows, notes = [], []
    for dtype in (torch.float32, torch.bfloat16):
        hf_m, our_m = hf.to(dtype), ours.to(dtype)
        a, b = run_hf(hf_m), run_ours(our_m)  # also the warm-up
        same = int((a == b).cumprod(-1).sum())  # identical leading tokens
        times: dict[str, list[float]] = {"hf": [], "ours": []}
        for _ in range(repeats):  # interleaved, so noise hits both alike
            for name, fn, m in (("hf", run_hf, hf_m), ("ours", run_ours, our_m)):
                t0 = time.perf_counter()
                fn(m)
                times[name].append(time.perf_counter() - t0)
        d = str(dtype).removeprefix("torch.")
        per_token = weight_bytes(our_m) + kv_bytes_per_token(
            lm.config, len(ids) + n / 2, torch.finfo(dtype).bits // 8)
        for name, label in (("hf", f"transformers generate, {d}"),
                            ("ours", f"lmforge generate, {d}")):
            s = min(times[name])
            rows.append([label, f"{s:.2f} s", f"{n / s:.1f}", f"{per_token / 1e6:.0f} MB",
                         f"{per_token * n / s / 1e9:.1f} GB/s",
                         f"{min(times['hf']) / s:.2f}x"])
        notes.append(f"{d}: first {same} of {n} tokens identical")
    print(f"SmolLM2-135M-Instruct ({ours.num_params() / 1e6:.0f}M params, from the Q4_1 GGUF), "
          f"batch 1, prompt {len(ids)} tokens (chat template), greedy, {n} new tokens, best of "
          f"{repeats}; {'; '.join(notes)}")
    print(machine())
    print(table(["decoder", "time", "tokens/s", "read per token", "implied bandwidth",
                 "vs transformers"], rows))
    print("read per token = all weights once (tied embeddings counted once) + the KV cache at the "
          "mean length; the implied bandwidth is that times tokens/s.")


if __name__ == "__main__":
    main()
