"""Hugging Face directories without a tokenizer.json: GPT-2's vocab.json + merges.txt and
BERT's vocab.txt give the same ids as transformers' tokenizers loaded from the same files, on
the stress corpus, and decode back the same."""

import json
import shutil
from pathlib import Path

import pytest

from lmforge.interop.hf.files import read_hf_tokenizer
from parity_corpus import CORPUS

GPT2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "gpt2-tokenizer"


def _gpt2_dir(tmp_path) -> Path:
    if not (GPT2 / "encoder.json").is_file():
        pytest.skip("../shared/data/gpt2-tokenizer is not here")
    d = tmp_path / "gpt2"
    d.mkdir()
    shutil.copy(GPT2 / "encoder.json", d / "vocab.json")
    shutil.copy(GPT2 / "vocab.bpe", d / "merges.txt")
    return d


def test_gpt2_vocab_and_merges(tmp_path):
    from transformers import GPT2Tokenizer, GPT2TokenizerFast

    d = _gpt2_dir(tmp_path)
    ours = read_hf_tokenizer(d)
    slow, fast = GPT2Tokenizer(str(d / "vocab.json"), str(d / "merges.txt")), \
        GPT2TokenizerFast(str(d / "vocab.json"), str(d / "merges.txt"))
    for text in CORPUS + ["<|endoftext|>between<|endoftext|>"]:
        ids = ours.encode(text).ids
        assert ids == slow.encode(text) == fast.encode(text), repr(text)
        assert ours.decode(ids, skip_special_tokens=False) == fast.decode(ids) == text


def _bert_dir(tmp_path, config: dict) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS * 5, trainers.WordPieceTrainer(
        vocab_size=500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    d = tmp_path / ("bert" + str(len(config)))
    d.mkdir()
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (d / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return d


@pytest.mark.parametrize("config", [{}, {"do_lower_case": False},
                                    {"do_lower_case": True, "strip_accents": False}])
def test_bert_vocab_txt(tmp_path, config):
    from transformers import BertTokenizer, BertTokenizerFast

    d = _bert_dir(tmp_path, config)
    ours = read_hf_tokenizer(d)
    slow, fast = BertTokenizer.from_pretrained(str(d)), BertTokenizerFast.from_pretrained(str(d))
    texts = CORPUS + ["[CLS] a [MASK] word [SEP]", "Éléphant CAFÉ naïve", "x" * 120]
    for text in texts:
        ids = ours.encode(text).ids
        assert ids == fast.encode(text) == slow.encode(text), repr(text)
        assert ours.decode(ids, skip_special_tokens=True) == \
            fast.decode(ids, skip_special_tokens=True)
    pair = ours.encode("first part", "second part")
    want = fast("first part", "second part")
    assert pair.ids == want["input_ids"] and pair.type_ids == want["token_type_ids"]
