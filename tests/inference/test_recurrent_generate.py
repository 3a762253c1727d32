"""Generation with a recurrent LM (rnn/lstm/gru): the state carried step by step gives what
re-reading the whole sequence each step gives (the naive reference), with no KV cache and no
context limit; EOS, --ignore-eos and seeded sampling behave as for decoders."""

import pytest
import torch

from lmforge.inference import GenerationConfig, PrefixCache, generate, generate_tokens
from lmforge.inference.recurrent import is_recurrent
from lmforge.inference.sampling import sample_next
from lmforge.models import ModelConfig, RecurrentLM

V = 37


def make_model(arch: str, seed: int = 0) -> RecurrentLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, vocab_size=V, d_model=24, n_layer=2, n_head=2,
                      context_length=8, init_std=0.5)
    model = RecurrentLM(cfg).eval()
    assert is_recurrent(model) and not hasattr(model, "new_cache")
    return model


@torch.no_grad()
def naive(model, idx, n: int, temperature: float = 0.0, top_k: int = 0, seed=None):
    """Re-run the full sequence from a zero state at every step (no state carried)."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    seq = idx
    for _ in range(n):
        logits = model(seq)[:, -1]  # (B, V)
        nxt = sample_next(logits, temperature, top_k, 1.0, gen)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq[:, idx.shape[1]:]


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_greedy_with_state_equals_rerunning_the_sequence(arch):
    model = make_model(arch)
    idx = torch.randint(0, V, (3, 13))  # longer than context_length = 8: no limit
    out = generate(model, idx, GenerationConfig(max_new_tokens=12, temperature=0.0))
    assert out.shape == (3, 12)
    assert torch.equal(out, naive(model, idx, 12))


def test_state_step_equals_full_forward():
    model = make_model("lstm")
    idx = torch.randint(0, V, (2, 9))
    full = model(idx)  # (B, T, V)
    logits, state = model(idx[:, :5], return_state=True)
    step, _ = model(idx[:, 5:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([logits, step], 1), full, rtol=1e-5, atol=1e-6)
    last = model(idx, last_only=True)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)


def test_stops_at_eos_and_ignore_eos_goes_on():
    model = make_model("gru")
    idx = torch.randint(0, V, (1, 6))
    ref = naive(model, idx, 12)[0].tolist()
    eos = ref[4]
    stop = ref.index(eos)  # the first time the greedy run produces it
    got = [int(t) for t in generate_tokens(model, idx, GenerationConfig(max_new_tokens=12,
                                                                       temperature=0.0), eos)]
    assert got == ref[:stop + 1]
    ignored = generate(model, idx, GenerationConfig(max_new_tokens=12, temperature=0.0,
                                                    stop_at_eos=False), eos)
    assert ignored[0].tolist() == ref


def test_finished_rows_keep_yielding_eos():
    model = make_model("rnn", seed=3)
    idx = torch.randint(0, V, (2, 5))
    ref = naive(model, idx, 10)
    eos = int(ref[0, 2])
    out = generate(model, idx, GenerationConfig(max_new_tokens=10, temperature=0.0), eos)
    for row in range(2):
        r = ref[row].tolist()
        if eos in r:
            k = r.index(eos)
            assert out[row, :k + 1].tolist() == r[:k + 1]
            assert (out[row, k:] == eos).all()
        else:
            assert out[row].tolist() == r[:out.shape[1]]


def test_seeded_sampling_is_reproducible_and_matches_the_reference():
    model = make_model("lstm")
    idx = torch.randint(0, V, (2, 4))
    cfg = GenerationConfig(max_new_tokens=15, temperature=1.3, top_k=10, seed=7)
    a, b = generate(model, idx, cfg), generate(model, idx, cfg)
    assert torch.equal(a, b)
    assert torch.equal(a, naive(model, idx, 15, temperature=1.3, top_k=10, seed=7))
    other = generate(model, idx, GenerationConfig(max_new_tokens=15, temperature=1.3,
                                                  top_k=10, seed=8))
    assert not torch.equal(a, other)


def test_a_prefix_cache_is_reset_not_used():
    """A chat session hands its PrefixCache over: it is reset, no KV cache is built."""
    model = make_model("lstm")
    idx = torch.randint(0, V, (1, 7))
    cache = PrefixCache(model)
    cache.ids = [1, 2, 3]
    got = torch.stack(list(generate_tokens(model, idx, GenerationConfig(
        max_new_tokens=6, temperature=0.0), cache=cache)), 1)
    assert torch.equal(got, naive(model, idx, 6))
    assert cache.cache is None and cache.ids == [] and (cache.kept, cache.fed) == (0, 7)
