"""Training throughput (tokens/s, forward + backward + AdamW step) of lmforge's GPT against a
plain PyTorch loop over transformers' GPT2LMHeadModel of the same shape, in the same run.

Shape (issue #2): 6 layers, 6 heads, d_model 384, context 256, character vocabulary (65),
batch 12. Every model: fp32 weights, dropout 0, exact (erf) GELU as nanoGPT's ``nn.GELU()``
(``--gelu tanh`` times GPT-2's tanh approximation in lmforge and transformers instead; nanoGPT
has only the exact one), AdamW(lr 1e-3, wd 0.1), grad clip 1.0.

    python bench/train_throughput.py [--steps 20] [--compile] [--nanogpt PATH/model.py] [--gelu tanh]

The two "ceiling" rows are the physical limit: the step's FLOPs (nanoGPT's 6N + 12LCT per
token) at the rate of this machine's best matrix product of the model's shape. No
implementation in that precision can beat them; their ratio to the peer is the most any
implementation can gain over it.

``--nanogpt``: nanoGPT's ``model.py`` (https://github.com/karpathy/nanoGPT, fetched into a
scratch directory, never vendored), timed as a third peer with its own optimiser set-up
(``configure_optimizers``), with and without ``torch.compile`` when ``--compile`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table, timeit  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402
from lmforge.training import make_optimizer  # noqa: E402

V, L, H, C, T, B = 65, 6, 6, 384, 256, 12
GELU = {"exact": ("gelu", "gelu"), "tanh": ("gelu_tanh", "gelu_new")}  # lmforge, transformers
gelu = "exact"


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
                      activation=GELU[gelu][0], **kw)
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
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     activation_function=GELU[gelu][1])
    model = GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def loss_fn(x, y):
        return F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
    return model, opt, loss_fn


def nanogpt(path: str, compile_: bool = False):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    cfg = mod.GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=H, n_embd=C, dropout=0.0,
                        bias=True)
    with contextlib.redirect_stdout(io.StringIO()):  # (it prints parameter counts)
        model = mod.GPT(cfg).train()
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    fwd = torch.compile(model) if compile_ else model

    def loss_fn(x, y):
        return fwd(x, y)[1]
    return model, opt, loss_fn


def step_fn(model, opt, loss_fn, x, y):
    def step():
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def flops_per_step() -> float:
    """Training FLOPs of one step (nanoGPT's estimate: 6 per parameter per token for the
    matrix products, plus attention's 12 * layers * width * context per token)."""
    n = 12 * L * C * C + V * C  # blocks' matrices + the (tied) output projection
    return B * T * (6 * n + 12 * L * C * T)


def gemm_ceiling(dtype=torch.float32) -> float:
    """FLOP/s of this machine's best matrix product at the model's shapes (the (B*T, C) x
    (C, 4C) feed-forward product, best of 5): the physical limit a training step can reach."""
    a = torch.randn(B * T, C, dtype=dtype)
    w = torch.randn(C, 4 * C, dtype=dtype)
    s = timeit(lambda: a @ w, 3, 20)
    s = min([s] + [timeit(lambda: a @ w, 1, 20) for _ in range(4)])
    return 2 * B * T * C * 4 * C / s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time lmforge with torch.compile")
    ap.add_argument("--nanogpt", help="nanoGPT's model.py, timed as a peer")
    ap.add_argument("--gelu", choices=list(GELU), default="exact",
                    help="GELU of lmforge and transformers (nanoGPT's is always exact)")
    args = ap.parse_args()
    global gelu
    gelu = args.gelu
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, T), generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    variants = [("transformers GPT2LMHeadModel, fp32 (peer)", hf), ("lmforge, fp32", ours),
                ("transformers GPT2LMHeadModel, bf16 autocast", bf16(hf)),
                ("lmforge, bf16 autocast (train.dtype=auto here)", bf16(ours))]
    if args.compile:
        variants += [("lmforge + torch.compile", lambda: ours(True)),
                     ("lmforge + torch.compile, bf16 autocast", bf16(lambda: ours(True)))]
    if args.nanogpt:
        variants.append(("nanoGPT model.py, fp32", lambda: nanogpt(args.nanogpt)))
        if args.compile:
            variants += [("nanoGPT + torch.compile", lambda: nanogpt(args.nanogpt, True)),
                         ("nanoGPT + torch.compile, bf16 autocast",
                          bf16(lambda: nanogpt(args.nanogpt, True)))]
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
    for name, dtype, same in (("ceiling: every FLOP at the best fp32 GEMM rate", torch.float32,
                                peer),
                               ("ceiling: every FLOP at the best bf16 GEMM rate", torch.bfloat16,
                                peer_bf16)):
        rate = gemm_ceiling(dtype)
        s = flops_per_step() / rate
        rows.append([name, f"{s * 1000:.0f} ms", f"{B * T / s:,.0f}", f"{peer / s:.2f}x",
                     f"{same / s:.2f}x"])
        print(f"{dtype}: GEMM {rate / 1e9:.0f} GFLOP/s; {flops_per_step() / 1e9:.1f} GFLOP a step")
    print(f"training step, {L} layers x {C} wide, {H} heads, context {T}, batch {B}, vocab {V}, "
          f"{gelu} GELU")
    print(machine())
    print(table(["model", "step time", "tokens/s", "vs fp32 peer", "vs same-precision peer"],
                rows))


if __name__ == "__main__":
    main()
