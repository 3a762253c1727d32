"""Decoding for encoder–decoder models: greedy search and beam search, batched, with a KV
cache for the decoder's self-attention and cross-attention keys/values computed once per
source. :class:`Translator` wraps a model and its tokenizer for text in, text out.

Rows (greedy) or sentences (beam) that have finished are dropped from the batch as decoding
goes on, so a batch costs what its longest output costs, not batch x longest.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import to_dict
from ..errors import ConfigError, GenerationError
from ..modeldir.meta import ModelMeta, Seq2SeqTokenNames, as_meta
from ..tokenizers.special import require_tokens


@dataclass
class DecodeConfig:
    beam_size: int = 1
    """1 = greedy search; more = beam search with this many hypotheses per sentence."""
    length_penalty: float = 1.0
    """Beam search ranks finished hypotheses by log-probability / length ** length_penalty
    (0 = raw log-probability, which favours short outputs; 1 = per-token average)."""
    max_len_ratio: float = 1.5
    """At most max_len_ratio * source tokens + max_len_extra target tokens."""
    max_len_extra: int = 10
    max_len: int = 0
    """A hard cap on target tokens; 0 = the model's context length."""
    early_stopping: bool = True
    """Beam search: stop a sentence once beam_size hypotheses have ended (True), or only
    when no running hypothesis can still beat the finished ones (False)."""

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"beam size must be at least 1 (1 = greedy), got {self.beam_size}")
        if self.max_len_ratio <= 0 or self.max_len_extra < 0 or self.max_len < 0:
            raise ConfigError("max_len_ratio must be > 0, max_len_extra and max_len >= 0")


def length_limits(src_mask: torch.Tensor, cfg: DecodeConfig, context: int) -> torch.Tensor:
    """Target-token budget of each source row (B,), from its real length."""
    n = src_mask.sum(1).double()  # (B,)
    cap = min(cfg.max_len or context, context - 1)
    return (n * cfg.max_len_ratio + cfg.max_len_extra).floor().long().clamp(1, cap)


def _never(start_id: int, pad_id: int | None, eos_id: int) -> list[int]:
    """Tokens decoding never writes: the start and padding tokens (none without ``pad_id``),
    except the end token, which BART also starts from."""
    return [] if pad_id is None else sorted({start_id, pad_id} - {eos_id})


@torch.no_grad()
def greedy_decode(model, src: torch.Tensor, src_mask: torch.Tensor, *, start_id: int,
                  eos_id: int, limits: torch.Tensor, pad_id: int | None = None) -> list[list[int]]:
    """The most likely next token at every step. src (B, S), src_mask (B, S), limits (B,).
    Returns each row's tokens, without the start token and without the end token."""
    B = src.shape[0]
    never = _never(start_id, pad_id, eos_id)  # tokens never to write
    memory = model.encode(src, src_mask)  # (B, S, C)
    cache = model.new_cache(B, int(limits.max()) + 1, dtype=memory.dtype)
    rows = torch.arange(B)  # original row of each active row
    tok = torch.full((B, 1), start_id, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(B)]
    for t in range(int(limits.max())):
        logits = model.decode(tok, memory, src_mask, cache=cache, last_only=True)[:, -1]  # (A, V)
        if never:
            logits[:, never] = -math.inf
        nxt = logits.argmax(-1)  # (A,)
        tokens = nxt.tolist()
        ended = torch.tensor([token == eos_id for token in tokens])  # (A,) on the CPU
        for b, token, end in zip(rows.tolist(), tokens, ended.tolist()):
            if not end:
                out[b].append(token)
        keep = ~ended & (limits[rows] > t + 1)
        if not keep.all():
            if not keep.any():
                break
            idx = keep.nonzero().squeeze(1)  # (A',)
            rows, dev_idx = rows[idx], idx.to(nxt.device)
            nxt, memory, src_mask = nxt[dev_idx], memory[dev_idx], src_mask[dev_idx]
            cache.reorder(dev_idx)
        tok = nxt[:, None]
    return out


class _Finished:
    """The best ``k`` ended hypotheses of one sentence, by normalised score."""

    def __init__(self, k: int):
        self.k, self.items = k, []  # [(score, tokens)]

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda s: -s[0])
        del self.items[self.k:]

    @property
    def full(self) -> bool:
        return len(self.items) >= self.k

    @property
    def worst(self) -> float:
        return self.items[-1][0] if self.items else -math.inf


@torch.no_grad()
def _still_running(rows, scores, seqs, finished: list, length: int, limits: torch.Tensor,
                   length_penalty: float, early_stopping: bool) -> list[int]:
    """The active groups that go on: a group stops when its finished list is full and no
    running beam can beat it (or at once with ``early_stopping``), or at its length budget,
    where its running beams join the finished ones."""
    K, keep = scores.shape[1], []
    for a in range(rows.shape[0]):
        fin = finished[int(rows[a])]
        best_running = float(scores[a, 0]) / length ** length_penalty
        done = fin.full and (early_stopping or best_running <= fin.worst)
        if length >= int(limits[rows[a]]):  # out of budget: running beams compete too
            for j in range(K):
                if math.isfinite(float(scores[a, j])):
                    fin.add(float(scores[a, j]) / length ** length_penalty,
                            seqs[a * K + j].tolist())
            done = True
        if not done:
            keep.append(a)
    return keep


def beam_search(model, src: torch.Tensor, src_mask: torch.Tensor, *, start_id: int, eos_id: int,
                limits: torch.Tensor, beam_size: int, length_penalty: float = 1.0,
                early_stopping: bool = True, pad_id: int | None = None) -> list[list[int]]:
    """Keep the ``beam_size`` most probable partial translations of each sentence; a
    hypothesis that emits the end token is set aside with score logp / length ** penalty.
    Returns the best finished hypothesis of each row (tokens without start and end)."""
    K = beam_size
    B = src.shape[0]
    never = _never(start_id, pad_id, eos_id)  # tokens never to write
    memory = model.encode(src, src_mask).repeat_interleave(K, 0)  # (B*K, S, C)
    src_mask = src_mask.repeat_interleave(K, 0)  # (B*K, S)
    cache = model.new_cache(B * K, int(limits.max()) + 1, dtype=memory.dtype)
    rows = torch.arange(B)  # original sentence of each active group of K beams
    scores = torch.zeros(B, K, device=src.device)
    scores[:, 1:] = -math.inf  # at the start all beams are the same: expand only the first
    seqs = torch.empty(B * K, 0, dtype=torch.long, device=src.device)  # (A*K, t)
    tok = torch.full((B * K, 1), start_id, dtype=torch.long, device=src.device)
    finished = [_Finished(K) for _ in range(B)]
    ar = torch.arange(2 * K, device=src.device)
    for t in range(int(limits.max())):
        A = rows.shape[0]
        logits = model.decode(tok, memory, src_mask, cache=cache, last_only=True)[:, -1]
        if never:
            logits[:, never] = -math.inf
        logp = F.log_softmax(logits.float(), -1)  # (A*K, V)
        V = logp.shape[-1]
        cand = (scores.reshape(-1, 1) + logp).view(A, K * V)
        top, idx = cand.topk(2 * K, dim=1)  # (A, 2K): at most K of them end (one per beam)
        beam, token = idx // V, idx % V
        is_eos = token == eos_id
        length = t + 1  # generated tokens, the end token included
        for a, j in (is_eos[:, :K] & torch.isfinite(top[:, :K])).nonzero().tolist():
            hyp = seqs[a * K + int(beam[a, j])].tolist()
            finished[int(rows[a])].add(float(top[a, j]) / length ** length_penalty, hyp)
        order = torch.where(is_eos, ar + 2 * K, ar).argsort(1)[:, :K]  # first K that go on
        sel_beam, sel_tok = beam.gather(1, order), token.gather(1, order)  # (A, K)
        scores = top.gather(1, order)
        src_rows = (torch.arange(A, device=src.device)[:, None] * K + sel_beam).view(-1)
        seqs = torch.cat([seqs[src_rows], sel_tok.view(-1, 1)], 1)  # (A*K, t+1)
        cache.reorder(src_rows, static=False)  # beams move within their sentence's group
        tok = sel_tok.view(-1, 1)
        keep = _still_running(rows, scores, seqs, finished, length, limits, length_penalty,
                              early_stopping)
        if len(keep) < A:
            if not keep:
                break
            kt = torch.tensor(keep, device=src.device)
            idx_rows = (kt[:, None] * K + torch.arange(K, device=src.device)).view(-1)
            rows, scores = rows[kt.cpu()], scores[kt]
            memory, src_mask = memory[idx_rows], src_mask[idx_rows]
            seqs, tok = seqs[idx_rows], tok[idx_rows]
            cache.reorder(idx_rows)
    return [f.items[0][1] if f.items else [] for f in finished]


def decode(model, src: torch.Tensor, src_mask: torch.Tensor, cfg: DecodeConfig, *,
           start_id: int, eos_id: int, pad_id: int | None = None) -> list[list[int]]:
    """Greedy (beam_size 1) or beam search over a padded batch of sources."""
    limits = length_limits(src_mask, cfg, model.cfg.context_length).cpu()
    if cfg.beam_size == 1:
        return greedy_decode(model, src, src_mask, start_id=start_id, eos_id=eos_id,
                             limits=limits, pad_id=pad_id)
    return beam_search(model, src, src_mask, start_id=start_id, eos_id=eos_id, limits=limits,
                       beam_size=cfg.beam_size, length_penalty=cfg.length_penalty,
                       early_stopping=cfg.early_stopping, pad_id=pad_id)


def pad_batch(ids: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: (ids (B, S), mask (B, S) bool, True = real token)."""
    S = max(1, max(len(x) for x in ids))
    out = torch.full((len(ids), S), pad_id, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, :len(x)] = torch.tensor(x, dtype=torch.long)
    mask = torch.arange(S)[None, :] < torch.tensor([len(x) for x in ids])[:, None]
    return out.to(device), mask.to(device)


@dataclass
class Seq2SeqTokens:
    """The special tokens an encoder–decoder reads and writes."""

    pad: int
    start: int
    """The decoder's first input (``<s>``; MarianMT starts from ``<pad>``)."""
    eos: int
    """Ends the source (appended) and the target (emitted)."""

    @classmethod
    def from_tokenizer(cls, tokenizer, meta: ModelMeta | dict | None = None) -> "Seq2SeqTokens":
        """The ids of meta.json's ``seq2seq_tokens`` (default ``<pad>``, ``<s>``, ``</s>``)."""
        names = as_meta(meta).seq2seq_tokens or Seq2SeqTokenNames()
        ids = require_tokens(tokenizer, to_dict(names), "an encoder–decoder model")
        return cls(ids["pad"], ids["start"], ids["eos"])


class Translator:
    """Text in, text out, for a loaded encoder–decoder model (``load_model_dir``)."""

    def __init__(self, model, tokenizer, meta: ModelMeta | dict | None = None, src_tokenizer=None,
                 long_inputs: str = "truncate"):
        if long_inputs not in ("truncate", "error"):
            raise ConfigError(f"long_inputs must be 'truncate' or 'error', got {long_inputs!r}")
        self.model, self.tokenizer = model, tokenizer
        self.src_tokenizer = src_tokenizer or tokenizer
        self.tokens = Seq2SeqTokens.from_tokenizer(tokenizer, meta)
        self.long_inputs = long_inputs

    @property
    def device(self):
        return self.model.lm_head.weight.device

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        """Source token ids with the end token appended, cut to the model's context."""
        limit = self.model.cfg.context_length
        out = []
        for i, enc in enumerate(self.src_tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = enc.ids + [self.tokens.eos]
            if len(ids) > limit:
                if self.long_inputs == "error":
                    raise GenerationError(
                        f"source {i + 1} has {len(ids)} tokens, more than the model's context of "
                        f"{limit}; shorten it or translate with long inputs truncated")
                warnings.warn(f"source {i + 1} has {len(ids)} tokens; truncated to the model's "
                              f"context of {limit}", stacklevel=2)
                ids = ids[:limit - 1] + [self.tokens.eos]
            out.append(ids)
        return out

    def translate_ids(self, src_ids: list[list[int]], cfg: DecodeConfig | None = None,
                      batch_size: int = 64) -> list[list[int]]:
        """Batches of similar length (less padding); results in the input order."""
        cfg = cfg or DecodeConfig()
        order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
        out: list[list[int]] = [[] for _ in src_ids]
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            src, mask = pad_batch([src_ids[i] for i in chunk], self.tokens.pad, self.device)
            for i, ids in zip(chunk, decode(self.model, src, mask, cfg, start_id=self.tokens.start,
                                            eos_id=self.tokens.eos, pad_id=self.tokens.pad)):
                out[i] = ids
        return out

    def translate(self, texts: list[str] | str, cfg: DecodeConfig | None = None,
                  batch_size: int = 64) -> list[str] | str:
        single = isinstance(texts, str)
        ids = self.translate_ids(self.encode_sources([texts] if single else list(texts)), cfg,
                                 batch_size)
        out = self.tokenizer.decode_batch(ids, skip_special_tokens=True)
        return out[0] if single else out

    @torch.no_grad()
    def cross_attention(self, source: str, target_ids: list[int] | None = None,
                        cfg: DecodeConfig | None = None):
        """Cross-attention of a translation (the model's own unless ``target_ids`` is given):
        returns (weights (L, H, T, S) for each decoder layer, source token strings, target
        token strings), target rows = the tokens written (the end token included)."""
        src_ids = self.encode_sources([source])[0]
        if target_ids is None:
            target_ids = self.translate_ids([src_ids], cfg)[0]
        tgt = target_ids + [self.tokens.eos]
        src, mask = pad_batch([src_ids], self.tokens.pad, self.device)
        tgt_in = torch.tensor([[self.tokens.start] + tgt[:-1]], device=self.device)
        cross: list[torch.Tensor] = []
        self.model.decode(tgt_in, self.model.encode(src, mask), mask, cross_out=cross)
        weights = torch.stack([w[0] for w in cross]).float().cpu()  # (L, H, T, S)
        names = lambda tok, ids: [tok.id_to_token(i) or str(i) for i in ids]  # noqa: E731
        return weights, names(self.src_tokenizer, src_ids), names(self.tokenizer, tgt)
