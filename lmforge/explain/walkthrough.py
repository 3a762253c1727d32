"""One forward pass walked through with its real numbers.

:func:`walkthrough` recomputes a model's forward pass step by step from the model's own
modules (embedding table, positions, the q/k/v/o projections, norms, feed-forward layers,
final norm, head), keeping every intermediate as a :class:`Step`. The same pass also runs
through the model itself with hooks on those modules; each step that has a counterpart there
is compared with it, and a disagreement raises :class:`StepMismatch`, so the numbers shown are
the ones the model computes. One layer (``layer``) is opened up head by head; the others run
as whole blocks. :mod:`.render` prints the steps or writes them as a web page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks import alibi_bias
from ..blocks.attention_backends import causal_mask
from ..errors import ConfigError
from .anatomy import (
    Capture,
    check_exact,
    encode_text,
    model_parts,
    reference_pass,
    token_names,
)


class StepMismatch(RuntimeError):
    """A recomputed step differs from what the model's own forward pass computed."""


@dataclass
class Step:
    """One intermediate result of the forward pass."""

    name: str
    """Short title, e.g. "softmax weights"."""
    tensor: torch.Tensor
    """The numbers (batch dimension removed; float32, on the CPU)."""
    explanation: str
    """What was computed, in a sentence or two (with the formula)."""
    rows: list[str] | None = None
    """Labels of the rows (usually the tokens), when the rows are positions."""
    note: str = ""
    """Something more to say about the numbers (softmax row sums, the top tokens)."""
    checked: str | None = None
    """What the step was compared with in the model's own forward pass (None: nothing)."""
    max_diff: float | None = None
    """Largest absolute difference from that tensor."""


@dataclass
class Walkthrough:
    """A forward pass explained: the input, the steps, the prediction."""

    kind: str
    tokens: list[str]
    ids: list[int]
    layer: int
    """The layer opened up head by head."""
    steps: list[Step] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)
    """The most likely next tokens (decoder) or tokens at the last position (encoder)."""


class _Recorder:
    """Collects steps and compares each with the tensor the model's forward pass produced."""

    def __init__(self, walk: Walkthrough, cap: Capture, tolerance: float):
        self.walk, self.cap, self.tol = walk, cap, tolerance

    def __call__(self, name: str, t: torch.Tensor, explanation: str, *, against=None,
                 rows: bool = True, note: str = "") -> torch.Tensor:
        """Add a step; ``against``: (where, tensor) the model computed, or a capture key
        ``"in:name"`` / ``"out:name"`` (skipped when the hook saw nothing)."""
        step = Step(name, t.detach().float().cpu(), explanation,
                    self.walk.tokens if rows else None, note)
        if isinstance(against, str):
            side, key = against.split(":", 1)
            found = (self.cap.inputs if side == "in" else self.cap.outputs).get(key)
            if found is not None and found.shape != step.tensor.shape and found.shape[0] == 1:
                found = found[0]  # the batch of one
            against = None if found is None else (f"{key} {side}put", found)
        if against is not None:
            where, ref = against
            ref = ref.detach().float().cpu()
            diff = float((step.tensor - ref).abs().max()) if ref.shape == step.tensor.shape \
                else math.inf
            if not diff <= self.tol * (1.0 + float(ref.abs().max())):
                raise StepMismatch(f"step {name!r} differs from the model's own {where} by "
                                   f"{diff:.3g}: the walkthrough does not match this model")
            step.checked, step.max_diff = where, diff
        self.walk.steps.append(step)
        return t


def _watched(parts, layer: int) -> dict[str, nn.Module]:
    """The modules whose inputs and outputs the steps are checked against."""
    bb = parts.backbone
    block = bb.layers[layer]
    named = {"embed": bb.embed, "pos": bb.pos, "token_type": bb.token_type,
             "embed_norm": bb.embed_norm, "block": block, "norm": bb.norm,
             "norm1": block.norm1, "norm2": block.norm2, "ff": block.ff,
             "q_proj": block.attn.q_proj, "k_proj": block.attn.k_proj,
             "v_proj": block.attn.v_proj, "o_proj": block.attn.o_proj,
             "up_proj": block.ff.up_proj, "down_proj": block.ff.down_proj,
             "gate_proj": getattr(block.ff, "gate_proj", None), "backbone": bb}
    return {k: m for k, m in named.items() if m is not None}


@torch.no_grad()
def walkthrough(model: nn.Module, tokenizer, text: str, *, layer: int = 0, top_k: int = 5,
                tolerance: float = 1e-4) -> Walkthrough:
    """Walk ``text`` through ``model`` (a decoder or an encoder; for an encoder–decoder, its
    encoder), opening up block ``layer`` (negative counts from the end)."""
    parts = model_parts(model)
    bb = parts.backbone
    check_exact(bb.cfg)
    n = len(bb.layers)
    if not -n <= layer < n:
        raise ConfigError(f"--layer {layer}: the model has layers 0..{n - 1}")
    layer %= n
    ids, tokens = encode_text(tokenizer, text, bb.cfg.context_length)
    idx = torch.tensor([ids], device=bb.embed.weight.device)  # (1, T)
    walk = Walkthrough(parts.kind, tokens, ids, layer)
    attn: list[torch.Tensor] = []
    with Capture(_watched(parts, layer)) as cap:
        logits = reference_pass(model, parts, idx, attn)  # the model's own pass
    rec = _Recorder(walk, cap, tolerance)
    x, positions, bias = _embed_steps(rec, bb, idx)
    for i in range(n):
        if i == layer:
            x = _attention_steps(rec, bb, x, positions, bias, attn[i][0])
            x = _feed_forward_steps(rec, bb.layers[i], x, bb.cfg.activation)
        else:
            x = bb.layers[i](x, positions=positions, bias=bias, is_causal=bb.causal, layer=i)
        if i == n - 1 or i == layer - 1:
            label = "after the last block" if i == n - 1 else f"after blocks 0..{i}"
            rec(f"hidden states {label}", x[0], f"The residual stream after block {i}"
                + (" (the blocks before the opened one run whole)." if i < layer else "."),
                against="in:norm" if i == n - 1 and bb.norm is not None else
                ("out:backbone" if i == n - 1 else "in:block"))
    if bb.norm is not None:
        x = bb.norm(x)
        rec("final norm", x[0], "The last normalisation before the head "
            f"({type(bb.norm).__name__}).", against="out:backbone")
    if logits is not None:
        _head_steps(rec, parts, tokenizer, x, logits, top_k)
    return walk


def _embed_steps(rec: _Recorder, bb, idx: torch.Tensor):
    """Token ids -> the input of the first block; returns (x (1, T, C), positions, bias)."""
    T = idx.shape[1]
    walk = rec.walk
    rec("token ids", idx[0], "The text split into tokens; each token is a row number of the "
        "embedding table.")
    x = bb.embed(idx)  # (1, T, C)
    scale = f", times sqrt(d_model) = {bb.embed.scale:.3g}" if bb.embed.scale != 1.0 else ""
    rec("token embeddings", x[0], f"Row id of the embedding table for each token{scale}: "
        f"one vector of d_model = {x.shape[-1]} numbers per token.", against="out:embed")
    positions = torch.arange(T, device=idx.device)  # (T,)
    if bb.pos is not None:
        p = bb.pos(positions)  # (T, C)
        kind = type(bb.pos).__name__.replace("Positions", "").lower()
        rec("positional encoding", p, f"One {kind} vector per position 0..{T - 1}, added to "
            "the token embeddings so that word order is visible.", against="out:pos")
        x = x + p
    if bb.token_type is not None:
        x = x + bb.token_type(torch.zeros_like(idx))
        rec("+ token type 0", x[0], "Segment embedding of segment A added (all tokens are A).")
    if bb.embed_norm is not None:
        x = bb.embed_norm(x)
    bias = None
    if bb.alibi is not None:
        bias = _alibi(bb, positions)
    what = {"rope": "Positions are not added here: RoPE rotates queries and keys inside "
                    "attention.", "alibi": "Positions are not added here: ALiBi adds a "
                    "distance penalty to the attention scores.", "none": "No positions."}
    rec("input to block 0", x[0], "Embeddings" + (" (normalised)" if bb.embed_norm else "")
        + " entering the first block. " + what.get(bb.cfg.positional, ""),
        against="in:block" if walk.layer == 0 else None)
    return x, positions, bias


def _alibi(bb, positions: torch.Tensor) -> torch.Tensor:
    """ALiBi's score bias (H, T, T), as the backbone builds it."""
    bias = alibi_bias(bb.alibi, positions, positions)
    return bias if bb.causal else -bias.abs()


def _split(t: torch.Tensor, n: int, d: int) -> torch.Tensor:  # (T, n*D) -> (n, T, D)
    return t.view(t.shape[0], n, d).transpose(0, 1)


def _attention_steps(rec: _Recorder, bb, x, positions, bias, model_weights) -> torch.Tensor:
    """The opened block's attention sublayer, head by head; returns x after its residual."""
    block = bb.layers[rec.walk.layer]
    attn = block.attn
    H, Hkv, D = attn.n_head, attn.n_kv_head, attn.head_dim
    h = block.norm1(x)[0] if block.prenorm else x[0]  # (T, C)
    if block.prenorm:
        rec("norm before attention", h, f"{type(block.norm1).__name__} of each token's vector "
            "(pre-norm: the sublayer reads a normalised copy).", against="out:norm1")
    q = rec("Q = x W_q", attn.q_proj(h), "Queries: what each token looks for.", against="out:q_proj")
    k = rec("K = x W_k", attn.k_proj(h), "Keys: what each token offers.", against="out:k_proj")
    v = rec("V = x W_v", attn.v_proj(h), "Values: what each token passes on.", against="out:v_proj")
    q, k, v = _split(q, H, D), _split(k, Hkv, D), _split(v, Hkv, D)  # (H|Hkv, T, D)
    if attn.rope is not None:
        q, k = attn.rope(q[None], positions)[0], attn.rope(k[None], positions)[0]
        rec("Q per head, RoPE applied", q, "Each head's queries, each pair of dimensions "
            "rotated by an angle proportional to the position.")
        rec("K per head, RoPE applied", k, "The keys, rotated the same way.")
    else:
        rec(f"Q per head ({H} x T x {D})", q, f"Q split into {H} heads of {D} numbers.")
    if Hkv < H:
        k, v = k.repeat_interleave(H // Hkv, 0), v.repeat_interleave(H // Hkv, 0)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (H, T, T)
    rec("scores QK^T / sqrt(d)", scores, f"Row i, column j: how well query i matches key j, "
        f"divided by sqrt({D}).")
    if bias is not None:
        scores = scores + bias
        rec("scores + ALiBi bias", scores, "Minus slope x distance, per head.")
    T = scores.shape[-1]
    window = attn.options.window
    allowed = causal_mask(T, T, x.device, 0, window) if bb.causal or window else \
        torch.ones(T, T, dtype=torch.bool, device=x.device)  # (T, T)
    masked = scores.masked_fill(~allowed, float("-inf"))
    rec("masked scores", masked, "Future positions set to -inf (a token may not look ahead)."
        if bb.causal else "Nothing masked: an encoder's tokens see every token.")
    w = torch.softmax(masked, -1)  # (H, T, T)
    sums = w.sum(-1)
    rec("softmax weights", w, "Each row turned into weights that are >= 0 and sum to 1: how "
        "much token i reads from token j.", against=("attention weights", model_weights),
        note="row sums: " + " ".join(f"{s:.4f}" for s in sums.flatten()[:12].tolist()))
    y = w @ v  # (H, T, D)
    rec("weights x V", y, "Each head's output: the weighted average of the value vectors.")
    cat = rec("heads concatenated", y.transpose(0, 1).reshape(T, H * D), f"The {H} head "
              f"outputs side by side ({H} x {D} = {H * D} numbers).", against="in:o_proj")
    o = rec("output projection", attn.o_proj(cat), "W_o mixes the heads back into d_model "
            "numbers.", against="out:o_proj")
    if block.prenorm:
        return _rec_residual(rec, x + o[None], "Added to the block's input (the residual "
                             "stream).", "in:norm2")
    return _rec_residual(rec, block.norm1(x + o[None]), "Added to the block's input, then "
                         f"normalised ({type(block.norm1).__name__}, post-norm).", "out:norm1")


def _rec_residual(rec: _Recorder, x: torch.Tensor, text: str, against: str) -> torch.Tensor:
    rec("residual (+ norm)" if "norm1" in against else "residual: x + attention", x[0], text,
        against=against)
    return x


def _feed_forward_steps(rec: _Recorder, block, x: torch.Tensor, activation: str) -> torch.Tensor:
    """The opened block's feed-forward sublayer; returns the block's output (1, T, C)."""
    ff = block.ff
    h = block.norm2(x)[0] if block.prenorm else x[0]  # (T, C)
    if block.prenorm:
        rec("norm before feed-forward", h, f"{type(block.norm2).__name__} again.",
            against="out:norm2")
    up = rec("first layer x W_1 + b_1", ff.up_proj(h), f"Each token on its own, widened to "
             f"{ff.up_proj.out_features} numbers.", against="out:up_proj")
    if ff.gated:
        gate = rec("gate x W_g", ff.gate_proj(h), "SwiGLU's gate.", against="out:gate_proj")
        a = ff.act(gate) * up
        what = "silu(gate) x first layer (SwiGLU)."
    else:
        a = ff.act(up)
        what = f"The activation ({activation}) element by element."
    rec("activation", a, what, against="in:down_proj")
    d = rec("second layer x W_2 + b_2", ff.down_proj(a), "Back to d_model numbers.",
            against="out:ff")
    out = x + d[None] if block.prenorm else block.norm2(x + d[None])  # (1, T, C)
    rec("block output", out[0], "Feed-forward output added to the residual stream"
        + ("." if block.prenorm else ", then normalised (post-norm)."), against="out:block")
    return out


def _head_steps(rec: _Recorder, parts, tokenizer, x, logits, top_k: int) -> None:
    """Final states -> logits -> probabilities of the next token (decoder) or of the token at
    the last position (encoder)."""
    mine = parts.head(x)  # (1, T, V)
    rec("logits", mine[0], f"The head maps each position's vector to one score per vocabulary "
        f"entry ({mine.shape[-1]}).", against=("model(ids) logits", logits[0]))
    p = torch.softmax(mine[0, -1].float(), -1)  # (V,)
    vals, ids = p.topk(min(top_k, p.numel()))
    names = token_names(tokenizer, ids.tolist())
    rec.walk.top = [(t, float(v)) for t, v in zip(names, vals.tolist())]
    what = "next token" if parts.kind == "decoder" else "token at the last position"
    rec("probabilities (last position)", p, f"softmax of the last row of logits: the "
        f"{what}.", rows=False, note="top: " + ", ".join(f"{t!r} {v:.3f}" for t, v in rec.walk.top))
