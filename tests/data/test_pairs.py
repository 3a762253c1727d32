"""Next-sentence pairs: document/sentence splitting, packing ([CLS]/[SEP] positions, segment
ids, padding), truncation of the longer segment, 50/50 labels that are right by construction,
and determinism given (seed, step)."""

import numpy as np
import pytest
import torch

from lmforge.data import SentencePairs, SpecialIds, pack_pair, split_sentences
from lmforge.data.pairs import truncate_pair
from lmforge.errors import DataError, TokenizerError
from lmforge.tokenizers import train_tokenizer

SP = SpecialIds(cls=1, sep=2, pad=0, mask=3)


def coded_docs(n_docs=12, seed=0):
    """Sentence j of document i is tokens 1000*(i+1) + 20*j + t (t < its length): every token
    says which document and sentence it came from."""
    rng = np.random.default_rng(seed)
    return [[[1000 * (i + 1) + 20 * j + t for t in range(int(rng.integers(2, 9)))]
             for j in range(int(rng.integers(1, 7)))] for i in range(n_docs)]


def where(tok: int) -> tuple[int, int, int]:
    return tok // 1000 - 1, (tok % 1000) // 20, tok % 20  # (document, sentence, position)


def test_split_sentences():
    text = "First line. Second sentence!\nthird line\n\n  \n\nOther doc.\r\nLast one?\n"
    assert split_sentences(text) == [["First line.", "Second sentence!", "third line"],
                                      ["Other doc.", "Last one?"]]
    assert split_sentences("\n\n") == []


def test_pack_pair_layout():
    a, b = np.array([10, 11, 12]), np.array([20, 21])
    ids, types, mask = pack_pair(a, b, 12, SP)
    assert ids.tolist() == [1, 10, 11, 12, 2, 20, 21, 2, 0, 0, 0, 0]
    assert types.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert mask.tolist() == [True] * 8 + [False] * 4
    with pytest.raises(DataError, match="do not fit"):
        pack_pair(a, b, 7, SP)


@pytest.mark.parametrize("la,lb,budget", [(10, 3, 8), (3, 10, 8), (4, 4, 5), (1, 9, 2), (7, 7, 7),
                                          (5, 2, 20)])
def test_truncation_shortens_the_longer_segment(la, lb, budget):
    a, b = np.arange(la), np.arange(100, 100 + lb)
    ta, tb = truncate_pair(a, b, budget)
    assert len(ta) + len(tb) == min(budget, la + lb)
    assert len(ta) >= 1 and len(tb) >= 1
    assert ta.tolist() == a[len(a) - len(ta):].tolist()  # A keeps its end (next to B) ...
    assert tb.tolist() == b[:len(tb)].tolist()  # ... and B its start
    # the same result as cutting one token at a time from whichever is longer
    ra, rb = la, lb
    while ra + rb > budget:
        if ra > rb:
            ra -= 1
        else:
            rb -= 1
    assert sorted((len(ta), len(tb))) == sorted((ra, rb))


@pytest.fixture(scope="module")
def batches():
    pairs = SentencePairs(coded_docs(), 24, SP)
    return pairs, [pairs.batch(50, seed=7, step=s) for s in range(40)]


def test_labels_are_balanced(batches):
    _, bs = batches
    labels = torch.cat([b["nsp_labels"] for b in bs]).float()  # 2000 pairs
    assert abs(labels.mean().item() - 0.5) < 0.05


def test_pairs_are_right_by_construction(batches):
    _, bs = batches
    for b in bs:
        for ids, types, mask, label in zip(b["input_ids"], b["token_type_ids"],
                                           b["padding_mask"], b["nsp_labels"]):
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any()
            seps = (ids == SP.sep).nonzero().flatten().tolist()
            assert ids[0] == SP.cls and len(seps) == 2 and seps[1] == n - 1
            assert (ids[n:] == SP.pad).all() and (types[n:] == 0).all()
            assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:n] == 1).all()
            a, bb = ids[1:seps[0]].tolist(), ids[seps[0] + 1:n - 1].tolist()
            assert a and bb
            da, sa, _ = where(a[-1])
            db, sb, pb = where(bb[0])
            if label == 0:  # B is the text right after A
                assert (db, sb, pb) == (da, sa + 1, 0)
                assert all(where(t)[0] == da for t in a + bb)
            else:  # B comes from another document
                assert db != da
            # segments are runs of whole consecutive sentences (after truncation at the edges)
            for seg in (a, bb):
                for u, v in zip(seg, seg[1:]):
                    (du, su, pu), (dv, sv, pv) = where(u), where(v)
                    assert du == dv and ((sv, pv) == (su, pu + 1) or (sv, pv) == (su + 1, 0))


def test_batches_are_deterministic(batches):
    pairs, bs = batches
    again = pairs.batch(50, seed=7, step=3)
    assert all(torch.equal(again[k], bs[3][k]) for k in again)
    other = pairs.batch(50, seed=7, step=3, micro_step=1)
    assert not torch.equal(other["input_ids"], bs[3]["input_ids"])
    assert not torch.equal(pairs.batch(50, seed=8, step=3)["input_ids"], bs[3]["input_ids"])


def test_bad_inputs():
    with pytest.raises(DataError, match="at least 2 documents"):
        SentencePairs([[[5, 6], [7]]], 16, SP)
    with pytest.raises(DataError, match="at least 2 documents"):
        SentencePairs([[[5, 6]], [[7]]], 16, SP)  # no document has two sentences
    with pytest.raises(DataError, match="too short"):
        SentencePairs(coded_docs(), 4, SP)


def test_from_texts_with_a_wordpiece_tokenizer(tmp_path):
    text = "\n\n".join(
        "\n".join(f"Document {d} says sentence number {s} about topic {d * s}." for s in range(4))
        for d in range(6))
    f = tmp_path / "docs.txt"
    f.write_text(text, encoding="utf-8")
    tok = train_tokenizer([f], kind="wordpiece", vocab_size=200, min_frequency=1)
    pairs = SentencePairs.from_texts([text], tok, 32)
    assert len(pairs.docs) == 6 and pairs.n_sentences == 24
    b = pairs.batch(4, seed=0, step=0)
    assert (b["input_ids"][:, 0] == tok.token_to_id("[CLS]")).all()
    bare = train_tokenizer([f], kind="char", special_tokens=["<unk>"])
    with pytest.raises(TokenizerError, match=r"\[CLS\]"):
        SentencePairs.from_texts([text], bare, 32)
