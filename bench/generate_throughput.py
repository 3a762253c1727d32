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
from lmforge.interop.hf_gpt2 import config_from_hf, state_dict_from_hf  # noqa: E402
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

    def run_hf():
        with torch.no_grad():
            return hf.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=0)[:, x.shape[1]:]

    def run_ours():
        return generate(ours, x, GenerationConfig(max_new_tokens=n, temperature=0))

    same = torch.equal(run_hf(), run_ours())  # also the warm-up
    times = {"hf": [], "ours": []}
    for _ in range(args.repeats):  # interleaved, so noise hits both
        for name, fn in (("hf", run_hf), ("ours", run_ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    hf_s, our_s = min(times["hf"]), min(times["ours"])
    print(f"GPT-2 small ({n_params / 1e6:.0f}M params, fp32), batch 1, prompt "
          f"{args.prompt_tokens} tokens, greedy, {n} new tokens; identical tokens: {same}")
    print(machine())
    rows = [["transformers generate (peer)", f"{hf_s:.2f} s", f"{n / hf_s:.1f}", "1.00x"],
            ["lmforge generate", f"{our_s:.2f} s", f"{n / our_s:.1f}", f"{hf_s / our_s:.2f}x"]]
    print(table(["decoder", "time", "tokens/s", "vs peer"], rows))


if __name__ == "__main__":
    main()
