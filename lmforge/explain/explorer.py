"""The attention explorer: what a model's attention heads look at and what each layer already
"knows", for decoders, encoders and encoder–decoders (self- and cross-attention).

* attention weights per layer and head (the model's own ``need_weights`` path, ``attn_out``);
* attention rollout (Abnar & Zuidema 2020): heads averaged, the residual connection added as
  the identity, ``0.5 * A + 0.5 * I``, rows renormalised, multiplied through the layers;
* logit lens: the final norm and the token head applied to the residual stream after every
  layer, giving each layer's top tokens at each position;
* head ablation: one head's slice of the concatenated head outputs zeroed just before
  ``o_proj`` (a forward pre-hook), and the change in loss and next-token probability.

:func:`explore` gathers the first three as JSON-able lists (for the web view and
``lmforge attention``); :func:`ablate_head` measures one head.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..errors import ConfigError
from ..modeldir import Seq2SeqTokenNames, load_model_dir
from ..modeldir.directory import load_source_tokenizer
from ..tokenizers.special import require_tokens
from .anatomy import (
    Capture,
    Parts,
    encode_text,
    head_switched_off,
    model_parts,
    reference_pass,
    token_names,
)

_EXTRAS: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
"""model -> (meta, source tokenizer) for models loaded by :func:`load_for_explore`
(encoder–decoders need the special-token names meta.json gives)."""


def load_for_explore(model_dir) -> tuple[nn.Module, object]:
    """Load a model directory for :func:`explore`: (model in eval mode on the CPU, tokenizer)."""
    lm = load_model_dir(model_dir)
    _EXTRAS[lm.model] = (lm.meta, load_source_tokenizer(model_dir))
    return lm.model, lm.tokenizer


def rollout(weights: torch.Tensor) -> torch.Tensor:
    """Attention rollout of self-attention weights (L, H, T, T) -> (T, T): row i says how much
    of position i's final state comes from each input position, through all layers."""
    T = weights.shape[-1]
    eye = torch.eye(T, dtype=torch.float64)
    out = eye
    for layer in weights.double():
        a = 0.5 * layer.mean(0) + 0.5 * eye  # (T, T): heads averaged, residual as identity
        a = a / a.sum(-1, keepdim=True)
        out = a @ out
    return out.float()


def lens_logits(parts: Parts, stack, residual: torch.Tensor) -> torch.Tensor:
    """The logits the model would give if ``residual`` (..., C), a layer's output, were the
    last layer's: the stack's final norm (if it has one), then the token head."""
    h = stack.norm(residual) if stack.norm is not None else residual
    return parts.head(h)


def top_tokens(tokenizer, logits: torch.Tensor, top_k: int) -> list[list[dict]]:
    """Logits (T, V) -> per position the ``top_k`` tokens and their probabilities."""
    probs = torch.softmax(logits.float(), -1)  # (T, V)
    vals, ids = probs.topk(min(top_k, probs.shape[-1]), -1)
    return [[{"token": t, "prob": round(float(p), 4)} for t, p in
             zip(token_names(tokenizer, row_ids), row_vals)]
            for row_ids, row_vals in zip(ids.tolist(), vals.tolist())]


def _rounded(t: torch.Tensor) -> list:
    return torch.round(t.double(), decimals=4).tolist()


def _run_stack(parts: Parts, stack, call) -> tuple[list, list]:
    """Run ``call(attn_out)`` once, hooks collecting each block's output of ``stack``;
    returns (attention weights per layer (H, Tq, Tk), residual stream per layer (T, C))."""
    attn: list[torch.Tensor] = []
    with Capture({str(i): b for i, b in enumerate(stack.layers)}) as cap:
        call(attn)
    residuals = [cap.outputs[str(i)][0] for i in range(len(stack.layers))]
    return [a[0] for a in attn], residuals


@torch.no_grad()
def explore(model, tokenizer, text: str, *, top_k: int = 5) -> dict:
    """Attention, rollout and logit lens of ``text``, as JSON-able lists (see the module's
    docstring): ``tokens``, ``attention`` [layer][head][query][key], ``rollout`` [query][key],
    ``logit_lens`` [layer][position] -> [{"token", "prob"}] (empty for a model without a token
    head), ``kind``. An encoder–decoder reads ``text`` as the source: ``attention`` and
    ``rollout`` are the encoder's; it adds ``target_tokens`` (the model's greedy translation,
    the end token included), ``decoder_attention``, ``cross_attention`` [layer][head][target]
    [source]; its ``logit_lens`` is over the decoder's layers and target positions."""
    model.eval()
    parts = model_parts(model)
    if parts.kind == "seq2seq":
        return explore_seq2seq(model, tokenizer, text, None, top_k=top_k)
    bb = parts.backbone
    ids, tokens = encode_text(tokenizer, text, bb.cfg.context_length, "text")
    idx = torch.tensor([ids], device=bb.embed.weight.device)  # (1, T)
    attn, residuals = _run_stack(parts, bb, lambda out: reference_pass(model, parts, idx, out))
    weights = torch.stack(attn).float().cpu()  # (L, H, T, T)
    lens = [] if parts.head is None else \
        [top_tokens(tokenizer, lens_logits(parts, bb, r), top_k) for r in residuals]
    return {"kind": parts.kind, "tokens": tokens, "attention": _rounded(weights),
            "rollout": _rounded(rollout(weights)), "logit_lens": lens}


@dataclass
class Seq2SeqIds:
    """An encoder–decoder's special-token ids (names from meta.json, default <pad> <s> </s>)."""

    pad: int
    start: int
    eos: int


def seq2seq_inputs(model, tokenizer, source: str, target: str | None):
    """(source ids ending with the end token, target ids ending with the end token, the
    special ids, the source tokenizer) of an encoder–decoder; without ``target``, the model's
    greedy translation of ``source``."""
    meta, src_tok = _EXTRAS.get(model, (None, None))
    src_tok = src_tok or tokenizer
    names = (meta.seq2seq_tokens if meta is not None else None) or Seq2SeqTokenNames()
    ids = Seq2SeqIds(**require_tokens(tokenizer, to_dict(names), "an encoder–decoder model"))
    context = model.cfg.context_length
    src_ids = encode_text(src_tok, source, context - 1, "--text")[0] + [ids.eos]
    if target is not None:
        tgt_ids = encode_text(tokenizer, target, context - 1, "--target")[0]
    else:
        tgt_ids = greedy_target(model, src_ids, ids, int(1.5 * len(src_ids)) + 10)
    return src_ids, tgt_ids + [ids.eos], ids, src_tok


@torch.no_grad()
def greedy_target(model, src_ids: list[int], ids: Seq2SeqIds, limit: int) -> list[int]:
    """The most likely token at every step (never the start or padding token), until the end
    token or ``limit`` tokens (at most the context); without the end token."""
    dev = model.lm_head.weight.device
    memory = model.encode(torch.tensor([src_ids], device=dev))  # (1, S, C)
    out: list[int] = []
    for _ in range(min(limit, model.cfg.context_length - 1)):
        tgt = torch.tensor([[ids.start] + out], device=dev)  # (1, t)
        logits = model.decode(tgt, memory, last_only=True)[0, -1]  # (V,)
        logits[[ids.start, ids.pad]] = -math.inf
        nxt = int(logits.argmax())
        if nxt == ids.eos:
            break
        out.append(nxt)
    return out


@torch.no_grad()
def explore_seq2seq(model, tokenizer, source: str, target: str | None = None, *,
                    top_k: int = 5) -> dict:
    """:func:`explore` of an encoder–decoder with a given ``target`` text (None: the model's
    greedy translation of ``source``)."""
    model.eval()
    parts = model_parts(model)
    src_ids, tgt, tokens, src_tok = seq2seq_inputs(model, tokenizer, source, target)
    dev = model.lm_head.weight.device
    src = torch.tensor([src_ids], device=dev)  # (1, S)
    tgt_in = torch.tensor([[tokens.start] + tgt[:-1]], device=dev)  # (1, T)
    enc_attn, _ = _run_stack(parts, model.encoder, lambda out: model.encode(src, attn_out=out))
    memory = model.encode(src)  # (1, S, C)
    cross: list[torch.Tensor] = []
    dec_attn, residuals = _run_stack(parts, model.decoder, lambda out: model.decode(
        tgt_in, memory, attn_out=out, cross_out=cross))
    enc = torch.stack(enc_attn).float().cpu()  # (Le, H, S, S)
    lens = [top_tokens(tokenizer, lens_logits(parts, model.decoder, r), top_k) for r in residuals]
    return {"kind": "seq2seq", "tokens": token_names(src_tok, src_ids),
            "attention": _rounded(enc), "rollout": _rounded(rollout(enc)), "logit_lens": lens,
            "target_tokens": token_names(tokenizer, tgt),
            "decoder_attention": _rounded(torch.stack(dec_attn)),
            "cross_attention": _rounded(torch.stack([c[0] for c in cross]))}


@torch.no_grad()
def _scores(model, parts: Parts, ids: torch.Tensor, target: torch.Tensor | None):
    """(logits (T, V) of the predicting side, the tokens they should predict (T',), aligned
    with the first T' rows): a decoder predicts each next token; an encoder with a masked-LM
    head its own input tokens; an encoder–decoder the target (``target``: decoder input, then
    gold, each (1, T))."""
    if parts.kind == "decoder":
        return model(ids)[0], ids[0, 1:]
    if parts.kind == "seq2seq":
        return model(ids, target[0])[0], target[1][0]
    if parts.head is None:
        raise ConfigError("head ablation needs a token head (a decoder, a masked-LM encoder "
                          "or an encoder–decoder); this encoder has none")
    return model(ids).mlm_logits[0], ids[0]


def ablate_head(model, tokenizer, text: str, layer: int, head: int,
                target: str | None = None) -> dict:
    """Switch off head ``head`` of ``layer`` (of the decoder, the encoder, or the
    encoder–decoder's encoder) and measure: ``loss`` and ``loss_ablated`` (mean cross-entropy
    of what the model predicts, see :func:`_scores`), ``prob`` and ``prob_ablated`` (the
    probability of the last position's originally most likely token), and that token."""
    model.eval()
    parts = model_parts(model)
    stack = parts.backbone
    if not 0 <= layer < len(stack.layers):
        raise ConfigError(f"layer {layer} does not exist; the model has layers "
                          f"0..{len(stack.layers) - 1}")
    tgt = None
    if parts.kind == "seq2seq":
        src_ids, t, tokens, _ = seq2seq_inputs(model, tokenizer, text, target)
        dev = model.lm_head.weight.device
        ids = torch.tensor([src_ids], device=dev)
        tgt = (torch.tensor([[tokens.start] + t[:-1]], device=dev), torch.tensor([t], device=dev))
    else:
        ids = torch.tensor([encode_text(tokenizer, text, stack.cfg.context_length, "text")[0]],
                           device=stack.embed.weight.device)
    if parts.kind == "decoder" and ids.shape[1] < 2:
        raise ConfigError("head ablation of a decoder needs a text of at least 2 tokens")
    logits, gold = _scores(model, parts, ids, tgt)
    with head_switched_off(stack.layers[layer].attn, head):
        ablated, _ = _scores(model, parts, ids, tgt)
    last = logits[-1].softmax(-1)
    best = int(last.argmax())
    return {"layer": layer, "head": head, "token": token_names(tokenizer, [best])[0],
            "loss": float(F.cross_entropy(logits[:len(gold)].float(), gold)),
            "loss_ablated": float(F.cross_entropy(ablated[:len(gold)].float(), gold)),
            "prob": float(last[best]), "prob_ablated": float(ablated[-1].softmax(-1)[best])}


def ablation_grid(model, tokenizer, text: str, target: str | None = None) -> dict:
    """Every head switched off in turn (:func:`ablate_head`): the unablated ``loss``, ``prob``
    and ``token``, and per layer and head how much switching that head off changes them
    (``delta_loss`` and ``delta_prob``, [layer][head], rounded to 4 decimals). A head whose
    removal raises the loss most is the one the prediction leans on."""
    stack = model_parts(model).backbone
    rows = [[ablate_head(model, tokenizer, text, layer, head, target)
             for head in range(stack.layers[layer].attn.n_head)]
            for layer in range(len(stack.layers))]
    first = rows[0][0]
    return {"token": first["token"], "loss": round(first["loss"], 4),
            "prob": round(first["prob"], 4),
            "delta_loss": [[round(r["loss_ablated"] - r["loss"], 4) for r in row] for row in rows],
            "delta_prob": [[round(r["prob_ablated"] - r["prob"], 4) for r in row] for row in rows]}
