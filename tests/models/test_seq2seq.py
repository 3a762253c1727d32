"""The encoder–decoder: teacher forcing equals incremental decoding, no peeking at future
target tokens, source padding is invisible, beam search is a real search."""

import itertools
import math

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.inference.translate import (DecodeConfig, beam_search, greedy_decode, length_limits,
                                         pad_batch)
from lmforge.models import ModelConfig, Seq2SeqLM, build_model


def tiny(**kw) -> Seq2SeqLM:
    torch.manual_seed(0)
    cfg = dict(arch="seq2seq", vocab_size=23, context_length=32, d_model=32, n_layer=2,
               encoder_layers=3, n_head=4, positional="sinusoidal", prenorm=False,
               scale_embeddings=True, activation="relu", init_std=0.2)
    cfg.update(kw)
    return Seq2SeqLM(ModelConfig(**cfg)).eval()


def batch(B=3, S=7, T=6, V=23, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (B, S), generator=g)
    tgt = torch.randint(3, V, (B, T), generator=g)
    lens = torch.tensor([S, S - 2, S - 4])[:B]
    mask = torch.arange(S)[None] < lens[:, None]
    return src.masked_fill(~mask, 0), mask, tgt


@pytest.mark.parametrize("kw", [{}, {"prenorm": True, "positional": "rope", "n_kv_head": 2},
                                {"share_embeddings": False, "tie_embeddings": False}])
def test_teacher_forcing_equals_incremental_decoding(kw):
    model = tiny(**kw)
    src, mask, tgt = batch()
    with torch.no_grad():
        full = model(src, tgt, mask)  # (B, T, V)
        memory = model.encode(src, mask)
        cache = model.new_cache(src.shape[0], 16)
        steps = [model.decode(tgt[:, t:t + 1], memory, mask, cache=cache) for t in range(tgt.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache._static) == model.cfg.n_layer  # cross K/V computed once per layer


def test_decoder_never_sees_future_targets():
    model = tiny()
    src, mask, tgt = batch()
    changed = tgt.clone()
    changed[:, 3:] = (changed[:, 3:] + 5) % 23
    with torch.no_grad():
        a, b = model(src, tgt, mask), model(src, changed, mask)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-3  # later positions do read them


def test_source_padding_changes_nothing():
    model = tiny()
    src, mask, tgt = batch()
    wide = torch.cat([src, torch.full((3, 5), 7)], 1)  # garbage in the padding
    wide_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
    with torch.no_grad():
        a, b = model(src, tgt, mask), model(wide, tgt, wide_mask)
        one = model(src[2:, :3], tgt[2:], mask[2:, :3])  # row 2 alone, unpadded (3 real tokens)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one, a[2:], atol=1e-5, rtol=1e-5)


def test_cross_attention_weights_skip_padding_and_sum_to_one():
    model = tiny()
    src, mask, tgt = batch()
    cross = []
    with torch.no_grad():
        model.decode(tgt, model.encode(src, mask), mask, cross_out=cross)
    assert len(cross) == 2 and cross[0].shape == (3, 4, 6, 7)  # (B, H, T, S)
    w = cross[-1]
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 6))
    assert float(w[2, :, :, 3:].abs().max()) == 0.0  # row 2 has 3 real source tokens


def test_tied_and_shared_embeddings():
    m = tiny()
    assert m.decoder.embed is m.encoder.embed and m.lm_head.weight is m.encoder.embed.weight
    assert m.tied_keys() == {"decoder.embed.weight", "lm_head.weight"}
    n = tiny(share_embeddings=False, tie_embeddings=False)
    assert n.num_params() == m.num_params() + 2 * 23 * 32


def test_config_errors():
    with pytest.raises(ConfigError, match="encoder_layers"):
        ModelConfig(arch="decoder", encoder_layers=2)
    with pytest.raises(ConfigError, match="share_embeddings"):
        ModelConfig(arch="seq2seq", vocab_size=10, src_vocab_size=12)
    with pytest.raises(ConfigError, match="beam size"):
        DecodeConfig(beam_size=0)
    assert isinstance(build_model(ModelConfig(arch="seq2seq", vocab_size=10, d_model=16, n_head=2,
                                              n_layer=1)), Seq2SeqLM)


def _sequence_logp(model, src, mask, start, seq):
    """log p(seq | src) by teacher forcing (seq ends with the end token, or not)."""
    tgt_in = torch.tensor([[start] + seq[:-1]])
    logp = torch.log_softmax(model(src, tgt_in, mask).float(), -1)[0]
    return float(sum(logp[t, tok] for t, tok in enumerate(seq)))


def test_beam_one_is_greedy_and_wide_beam_is_exhaustive():
    model = tiny(vocab_size=4, init_std=0.5)  # tokens 0..3: 1 = start, 2 = end
    src, mask, _ = batch(B=3, V=4)
    start, eos, L = 1, 2, 3
    limits = torch.full((3,), L)
    with torch.no_grad():
        greedy = greedy_decode(model, src, mask, start_id=start, eos_id=eos, limits=limits)
        beam1 = beam_search(model, src, mask, start_id=start, eos_id=eos, limits=limits, beam_size=1)
        wide = beam_search(model, src, mask, start_id=start, eos_id=eos, limits=limits,
                           beam_size=16, length_penalty=1.0)
        for b in range(3):
            s, m = src[b:b + 1], mask[b:b + 1]
            best, best_seq = -math.inf, None
            for n in range(1, L + 1):  # every output of up to L tokens, ended or cut at L
                for body in itertools.product([0, 1, 3], repeat=n - 1):
                    for last in ([eos, 0, 1, 3] if n == L else [eos]):
                        seq = [*body, last]
                        score = _sequence_logp(model, s, m, start, seq) / n
                        if score > best:
                            best, best_seq = score, seq
            assert wide[b] == [t for t in best_seq if t != eos]
    assert beam1 == greedy


def test_length_limits_and_padding_helper():
    ids, mask = pad_batch([[5, 6, 2], [7, 2]], pad_id=0)
    assert ids.tolist() == [[5, 6, 2], [7, 2, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    lim = length_limits(mask, DecodeConfig(max_len_ratio=2.0, max_len_extra=1), context=6)
    assert lim.tolist() == [5, 5]  # 3*2+1 = 7 capped at context-1; 2*2+1 = 5
