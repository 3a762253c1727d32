"""Draw the attention patterns of the registered backends as PNGs in docs/images/attention/:
which keys (columns) each query (rows) may attend to, encoder and decoder side by side.

    python docs/gen_attention_patterns.py [--length 64]

Pattern backends (longformer, bigbird, sparse_strided, sparse_fixed, sliding_window, full) are
drawn from :func:`lmforge.blocks.sparse_patterns.pattern_mask`. Backends without a fixed
pattern (lsh, performer, linformer), when registered, are drawn as the attention weights they
give one random input (mean over heads). They return no weight matrix, but their output is
linear in the values, out = A v, so the values are set to the identity matrix and the output
*is* A: the exact weights each query gives each key (an approximation's implied weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmforge.blocks import (
    ATTENTION_BACKENDS,
    AttentionOptions,
    attention_forward,
    backend_settings,
)
from lmforge.blocks.sparse_patterns import pattern_mask

OUT = Path(__file__).resolve().parent / "images" / "attention"
PATTERNS = {  # name -> (attention_options table, caption)
    "full": ({}, "full: every key"),
    "sliding_window": ({}, "sliding_window = 8"),
    "longformer": ({"local_window": 4, "global_tokens": [0, 32]},
                   "longformer: window 4, globals [0, 32]"),
    "longformer_dilated": ({"local_window": 4, "global_tokens": [0], "dilation": 2},
                           "longformer: window 4, dilation 2"),
    "bigbird": ({"block_size": 8, "random_blocks": 1, "global_blocks": 1},
                "bigbird: blocks of 8, 3 window, 1 global, 1 random"),
    "sparse_strided": ({"stride": 8}, "sparse_strided: stride 8"),
    "sparse_fixed": ({"block_size": 8, "summary": 2}, "sparse_fixed: block 8, summary 2"),
}
LEARNED = {"lsh": {"n_buckets": 8, "chunk_length": 8}, "performer": {"num_features": 64},
           "linformer": {"projected_length": 16}}


def draw(name: str, pictures: list[tuple[str, torch.Tensor]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(pictures), figsize=(3.2 * len(pictures), 3.4))
    for ax, (title, m) in zip(axes if len(pictures) > 1 else [axes], pictures):
        ax.imshow(m.detach().float().numpy(), cmap="Blues", interpolation="nearest", vmin=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def pattern_pictures(key: str, table: dict, T: int):
    name = "longformer" if key.startswith("longformer") else key
    if name == "sliding_window":
        return [(kind, pattern_mask(name, None, T, causal, window=8))
                for kind, causal in (("encoder", False), ("decoder", True))]
    settings = backend_settings(name, table) if table else None
    out = [("encoder", pattern_mask(name, settings, T, False))]
    if ATTENTION_BACKENDS[name].causal:
        out.append(("decoder", pattern_mask(name, settings, T, True)))
    return out


def weight_pictures(name: str, T: int):
    """The weights backend ``name`` gives a random input (mean over 4 heads)."""
    entry = ATTENTION_BACKENDS[name]
    settings = backend_settings(name, LEARNED[name]) if entry.settings else None
    state = entry.make_state(settings, 4, 16, T) if entry.make_state else None
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, T, 16, generator=g) for _ in range(3))
    out = []
    eye = torch.eye(T).expand(1, 4, T, T)  # values = the identity: out = A (in slices of
    # the head width, since some backends need values as wide as the keys)
    for causal in ((False, True) if entry.causal else (False,)):
        opts = AttentionOptions(settings=settings, state=state)
        if entry.returns_weights:
            _, w = attention_forward(name, q, k, v, is_causal=causal, need_weights=True,
                                     options=opts)
        else:
            w = torch.cat([attention_forward(name, q, k, eye[..., c:c + 16], is_causal=causal,
                                             options=opts)[0] for c in range(0, T, 16)], -1)
        out.append(("decoder" if causal else "encoder", w[0].mean(0)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=64)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for key, (table, caption) in PATTERNS.items():
        draw(caption, pattern_pictures(key, table, args.length), OUT / f"{key}.png")
        print(OUT / f"{key}.png")
    for name in LEARNED:
        if name not in ATTENTION_BACKENDS:
            print(f"skipped {name}: not registered")
            continue
        pics = weight_pictures(name, args.length)
        if pics is None:
            print(f"skipped {name}: it does not return weights")
            continue
        draw(f"{name}: weights on a random input", pics, OUT / f"{name}.png")
        print(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
