"""Generation throughput with the KV cache: lmforge against transformers' ``generate`` on the
same GPT-2-small (124M) weights, batch 1, greedy, 128 new tokens, in the same run.

The weights are random (no hub here) but identical in both models, and the benchmark checks
that both produce the same tokens before it reports a speed.

    python bench/generate_throughput.py [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.interop.hf.gpt2 import config_from_hf, state_dict_from_hf  # noqa: E402
from lmforge.models import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf_cfg = GPT2Config(bos_token_id=0, eos_token_id=0)  # GPT-2 small: 12 x 768, 50257 tokens
    hf = GPT2LMHeadModel(hf_cfg).eval()
    cfg = config_from_hf(hf_cfg.to_dict())
    ours = build_model(cfg).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), cfg))
    n_params = ours.num_params()
    x = torch.randint(1, cfg.vocab_size, (1, args.prompt_tokens))
    n = args.new_tokens

    def run_hf(model):
        with torch.no_grad():
            return model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0)[:, x.shape[1]:]

    def run_ours(model):
        return generate(model, x, GenerationConfig(max_new_tokens=n, temperature=0))

    rows, same = [], {}
    for dtype in (torch.float32, torch.bfloat16):
        hf_m, our_m = hf.to(dtype), ours.to(dtype)
        same[dtype] = torch.equal(run_hf(hf_m), run_ours(our_m))  # also the warm-up
        times: dict[str, list[float]] = {"hf": [], "ours": []}
        for _ in range(args.repeats):  # interleaved, so noise hits both alike
            for name, fn, m in (("hf", run_hf, hf_m), ("ours", run_ours, our_m)):
                t0 = time.perf_counter()
                fn(m)
                times[name].append(time.perf_counter() - t0)
        hf_s, our_s = min(times["hf"]), min(times["ours"])
        d = str(dtype).removeprefix("torch.")
        rows.append([f"transformers generate, {d} (peer)", f"{hf_s:.2f} s", f"{n / hf_s:.1f}", "1.00x"])
        rows.append([f"lmforge generate, {d}", f"{our_s:.2f} s", f"{n / our_s:.1f}",
                     f"{hf_s / our_s:.2f}x"])
    print(f"GPT-2 small ({n_params / 1e6:.0f}M params), batch 1, prompt {args.prompt_tokens} "
          f"tokens, greedy, {n} new tokens; identical tokens fp32: {same[torch.float32]}, "
          f"bf16: {same[torch.bfloat16]}")
    print(machine())
    print(table(["decoder", "time", "tokens/s", "vs peer (same dtype)"], rows))
    mb = n_params * 4 / 1e6
    print(f"fp32 weights: {mb:.0f} MB read per token; at the fp32 rate above that is "
          f"{mb / 1e3 * float(rows[1][2]):.1f} GB/s of weight traffic")


if __name__ == "__main__":
    main()
