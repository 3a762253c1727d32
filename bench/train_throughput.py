"""Training throughput (tokens/s, forward + backward + AdamW step) of lmforge's GPT against a
plain PyTorch loop over transformers' GPT2LMHeadModel of the same shape, in the same run.

Shape (issue #2): 6 layers, 6 heads, d_model 384, context 256, character vocabulary (65),
batch 12. Both models: fp32, dropout 0, AdamW(lr 1e-3, wd 0.1), grad clip 1.0.

    python bench/train_throughput.py [--steps 20] [--compile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table, timeit  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402
from lmforge.training import make_optimizer  # noqa: E402

V, L, H, C, T, B = 65, 6, 6, 384, 256, 12


def bf16(make):
    """The same model trained under bf16 autocast (fp32 weights and optimiser state)."""
    def build():
        model, opt, loss_fn = make()

        def autocast_loss(x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return loss_fn(x, y)
        return model, opt, autocast_loss
    return build


def ours(compile_: bool = False, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, n_layer=L, n_head=H, d_model=C, context_length=T,
                      activation="gelu_tanh", **kw)
    model = build_model(cfg).train()
    fwd = torch.compile(model) if compile_ else model
    opt = make_optimizer(model, 1e-3, 0.1)

    def loss_fn(x, y):
        return F.cross_entropy(fwd(x).flatten(0, 1), y.flatten())
    return model, opt, loss_fn


def hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def loss_fn(x, y):
        return F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
    return model, opt, loss_fn


def step_fn(model, opt, loss_fn, x, y):
    def step():
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time lmforge with torch.compile")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, T), generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    variants = [("transformers GPT2LMHeadModel, fp32 (peer)", hf), ("lmforge, fp32", ours),
                ("transformers GPT2LMHeadModel, bf16 autocast", bf16(hf)),
                ("lmforge, bf16 autocast (train.dtype=auto here)", bf16(ours))]
    if args.compile:
        variants.append(("lmforge + torch.compile", lambda: ours(True)))
    # interleave the measurements so that machine noise hits both alike
    results = {name: [] for name, _ in variants}
    built = {name: make() for name, make in variants}
    for _ in range(3):
        for name, _ in variants:
            s = timeit(step_fn(*built[name], x, y), args.warmup, args.steps)
            results[name].append(s)
    peer = min(results[variants[0][0]])
    peer_bf16 = min(results[variants[2][0]])
    rows = []
    for name, _ in variants:
        s = min(results[name])
        same = peer_bf16 if "bf16" in name else peer  # like for like: same precision
        rows.append([name, f"{s * 1000:.0f} ms", f"{B * T / s:,.0f}", f"{peer / s:.2f}x",
                     f"{same / s:.2f}x"])
    print(f"training step, {L} layers x {C} wide, {H} heads, context {T}, batch {B}, vocab {V}")
    print(machine())
    print(table(["model", "step time", "tokens/s", "vs fp32 peer", "vs same-precision peer"],
                rows))


if __name__ == "__main__":
    main()
