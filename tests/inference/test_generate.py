import pytest
import torch

from lmforge.errors import GenerationError
from lmforge.inference import (GenerationConfig, filter_logits, generate, generate_tokens,
                               sample_next)
from lmforge.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layer=2, n_head=4, context_length=16,
                      positional="rope")
    return build_model(cfg).eval()


def naive_greedy(model, idx, n):
    """Full forward pass over the (cropped) sequence for every new token, no cache."""
    seq = idx
    for _ in range(n):
        logits = model(seq[:, -model.cfg.context_length:])[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq[:, idx.shape[1]:]


def test_cached_greedy_equals_uncached(model):
    idx = torch.randint(0, 40, (3, 5))
    out = generate(model, idx, GenerationConfig(max_new_tokens=9, temperature=0))
    assert torch.equal(out, naive_greedy(model, idx, 9))


def test_generation_past_the_context_refills_the_cache(model):
    idx = torch.randint(0, 40, (1, 10))
    out = generate(model, idx, GenerationConfig(max_new_tokens=30, temperature=0))
    assert out.shape == (1, 30)
    # up to the first refill it matches the uncached decoder exactly
    assert torch.equal(out[:, :6], naive_greedy(model, idx, 6))


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    # top_p 0.7: 0.5 alone is not enough, 0.5 + 0.25 reaches it -> keep two
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.1))[0].tolist() == [True, False, False, False]


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20000, 3)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_next(logits, 1.0, generator=g), minlength=3) / 20000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.015)
    assert (sample_next(logits, 0.0) == 0).all()


def test_seed_makes_sampling_reproducible(model):
    idx = torch.randint(0, 40, (1, 4))
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=5)
    assert torch.equal(generate(model, idx, cfg), generate(model, idx, cfg))


def test_eos_stops_every_row(model):
    idx = torch.randint(0, 40, (2, 4))
    first = generate(model, idx, GenerationConfig(max_new_tokens=1, temperature=0))
    eos = int(first[0, 0])
    out = generate(model, idx[:1], GenerationConfig(max_new_tokens=10, temperature=0), eos_id=eos)
    assert out.shape[1] == 1


def test_prompt_longer_than_context_is_refused(model):
    with pytest.raises(GenerationError, match="prompt is 17 tokens.*context is 16"):
        generate(model, torch.zeros(1, 17, dtype=torch.long), GenerationConfig())


def test_stream_text_cuts_at_stop_string():
    from tokenizers import Tokenizer, decoders, models

    from lmforge.inference import stream_text

    chars = "abcdefghij"
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(chars)}, []))
    tok.decoder = decoders.Fuse()
    torch.manual_seed(0)
    m = build_model(ModelConfig(vocab_size=10, d_model=16, n_layer=1, n_head=2,
                                context_length=32)).eval()
    full = "".join(stream_text(m, tok, "ab", GenerationConfig(max_new_tokens=20, temperature=0)))
    assert len(full) == 20
    stop = full[5:7]
    cut = "".join(stream_text(m, tok, "ab", GenerationConfig(max_new_tokens=20, temperature=0,
                                                              stop=[stop])))
    assert cut == full[: full.find(stop)]


def test_several_eos_ids_and_rows_that_finish(model):
    idx = torch.randint(0, 40, (2, 4), generator=torch.Generator().manual_seed(3))
    free = generate(model, idx, GenerationConfig(max_new_tokens=8, temperature=0))
    a, b = int(free[0, 2]), int(free[1, 5])
    out = generate(model, idx, GenerationConfig(max_new_tokens=8, temperature=0), eos_id=[a, b])
    first = [min(i for i, t in enumerate(row.tolist()) if t in (a, b)) for row in free]
    assert out.shape[1] == max(first) + 1  # stops once every row has ended
    for r, f in enumerate(first):
        assert torch.equal(out[r, :f + 1], free[r, :f + 1])
        assert (out[r, f + 1:] == a).all()  # a finished row repeats the first eos id


def test_kv_cache_holds_only_the_positions_needed(model, monkeypatch):
    from lmforge.inference.generate import cache_length

    sizes = []
    new_cache = model.new_cache

    def spy(batch, max_len=None, **kw):
        sizes.append(max_len)
        return new_cache(batch, max_len=max_len, **kw)

    monkeypatch.setattr(model, "new_cache", spy)
    idx = torch.randint(0, 40, (1, 5))
    generate(model, idx, GenerationConfig(max_new_tokens=4, temperature=0))
    assert sizes == [5 + 4 - 1]  # the last new token is never fed back
    sizes.clear()
    out = generate(model, idx, GenerationConfig(max_new_tokens=30, temperature=0))
    assert out.shape == (1, 30) and set(sizes) == {16}  # capped at the context, refilled
    assert cache_length(131072, 20, 100) == 119 and cache_length(16, 20, 100) == 16


@pytest.fixture
def one_thread():
    """Tiny tensors: threads waiting on each other (a busy machine) only slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(model, prompt, n, cache=None):
    cfg = GenerationConfig(max_new_tokens=n, temperature=0)
    return [int(t) for t in generate_tokens(model, torch.tensor([prompt]), cfg, cache=cache)]


def test_a_prefix_cache_feeds_only_the_new_tokens_and_grows(model, one_thread):
    from lmforge.inference.generate import PrefixCache

    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 40, (4,), generator=g).tolist()
    cache = PrefixCache(model)
    out = _gen(model, prompt, 3, cache)
    assert out == _gen(model, prompt, 3) and cache.fed == 4 and cache.max_len == 4 + 2
    assert cache.ids == prompt + out[:-1]  # the last new token is not fed back
    keys = cache.cache.k[0][:, :, :6].clone()
    longer = prompt + out + [7, 8]
    fed = []
    handle = model.register_forward_pre_hook(lambda m, args: fed.append(args[0].shape[1]))
    try:
        assert _gen(model, longer, 3, cache) == _gen(model, longer, 3)
    finally:
        handle.remove()
    assert cache.kept == 6 and fed[0] == 3 and fed[1:3] == [1, 1] and fed[3] == 9
    assert cache.max_len == 12  # grew (doubled), the kept positions copied over
    assert torch.equal(cache.cache.k[0][:, :, :6], keys)
    # a prompt that diverges at position 2: the cache is cut back to 2 positions
    other = prompt[:2] + [(prompt[2] + 1) % 40] + [5, 6]
    assert _gen(model, other, 4, cache) == _gen(model, other, 4) and cache.kept == 2
    # the same prompt again: all but its last token are kept (one must be fed)
    assert _gen(model, other, 2, cache) == _gen(model, other, 2) and cache.kept == 4
    cache.reset()
    assert _gen(model, other, 2, cache) == _gen(model, other, 2) and cache.kept == 0


def test_a_prefix_cache_past_the_context_and_misuse(model, one_thread):
    from lmforge.inference.generate import PrefixCache

    prompt = torch.randint(0, 40, (10,), generator=torch.Generator().manual_seed(2)).tolist()
    cache = PrefixCache(model)
    assert _gen(model, prompt, 30, cache) == _gen(model, prompt, 30)  # refilled at the context
    assert cache.max_len == 16 and len(cache.ids) == cache.cache.length <= 16
    again = prompt[:3] + [1, 2]
    assert _gen(model, again, 20, cache) == _gen(model, again, 20)
    with pytest.raises(GenerationError, match="one sequence"):
        list(generate_tokens(model, torch.zeros(2, 3, dtype=torch.long), GenerationConfig(),
                             cache=cache))
    first = generate_tokens(model, torch.tensor([prompt]), GenerationConfig(temperature=0),
                            cache=cache)
    next(first)
    _gen(model, again, 2, cache)  # a second generation takes the cache over
    with pytest.raises(GenerationError, match="another generation"):
        next(first)


def test_repetition_penalty_equals_transformers_processor():
    """CTRL's penalty as transformers applies it: positive logits of seen tokens divided,
    negative ones multiplied; unseen tokens untouched."""
    transformers = pytest.importorskip("transformers")
    from lmforge.inference.sampling import penalize_repetition

    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    seen = torch.randint(0, 50, (3, 12))
    ref = transformers.RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone())
    assert torch.allclose(penalize_repetition(logits, seen, 1.3), ref)
    assert torch.equal(penalize_repetition(logits, seen, 1.0), logits)

