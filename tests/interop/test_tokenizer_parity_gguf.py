"""GGUF tokenizers: for every pre-tokenizer type, the tokenizer `lmforge import` builds gives
the reference's ids on the parity corpus and decodes back to the text. The reference is
transformers' GGUF loader (AutoTokenizer.from_pretrained(dir, gguf_file=...)) where it
implements the type's split; otherwise llama.cpp's split done naively here (each regex in turn
over each piece, matches and gaps kept, with the `regex` package) feeding a plain byte-level
BPE, and for smollm/starcoder the original tokenizer.json's Digits + ByteLevel pre-tokenizer."""

import json

import numpy as np
import pytest
import regex
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lmforge.errors import TokenizerError
from lmforge.interop.gguf_tokenizer import (
    PRE_SPLITS,
    PRE_TYPES,
    gguf_tokenizer,
    spm_merges,
)
from tests.interop.parity_corpus import CORPUS

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def bpe_meta():
    """A byte-level BPE trained on the corpus (with merges across digits and spaces), as the
    tokenizer metadata of a GGUF file."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    tokens = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    merges = json.loads(tok.to_str())["model"]["merges"]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3 if t in SPECIALS else 1 for t in tokens],
            "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in merges],
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


def write_gguf(path, meta: dict) -> None:
    """A GGUF file holding only ``meta`` (and one tiny tensor)."""
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in meta.items():
        if key == "tokenizer.ggml.scores":
            w.add_array(key, [float(v) for v in value])
        elif key == "tokenizer.ggml.token_type":
            w.add_token_types(value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    w.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(tmp_path, meta: dict):
    write_gguf(tmp_path / "t.gguf", meta)
    return transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="t.gguf")


def check_parity(tok, encode, texts=CORPUS):
    for text in texts:
        ids = tok.encode(text).ids
        assert ids == encode(text), repr(text)
        assert tok.decode(ids, skip_special_tokens=False) == text, repr(text)


TRANSFORMERS_KINDS = ["default", "gpt-2", "llama-bpe", "qwen2", "tekken", "gpt-4o"]


@pytest.mark.parametrize("pre", TRANSFORMERS_KINDS)
def test_bpe_matches_transformers(bpe_meta, tmp_path, pre):
    meta = {**bpe_meta, "tokenizer.ggml.pre": pre}
    ref = reference(tmp_path, meta)
    tok = gguf_tokenizer(meta)
    texts = [*CORPUS, "<|im_start|>user\nhi 123<|im_end|>\n<|endoftext|>"]
    check_parity(tok, lambda t: ref.encode(t, add_special_tokens=False), texts)


def test_every_transformers_pre_name_has_its_split():
    """Each pre-tokenizer name transformers knows maps to the very regex it uses."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_PRE_TOKENIZER_SPLITS,
    )

    for name, split in GGUF_PRE_TOKENIZER_SPLITS.items():
        if name == "qwen35":
            continue  # Qwen3.5's split: not among lmforge's types (refused)
        assert PRE_SPLITS[PRE_TYPES[name]] == (split,), name


def naive_llama_cpp(meta: dict, splits) -> callable:
    """llama.cpp's split, done by hand: each regex over each piece, keeping matches and gaps;
    then each word on its own through byte-level BPE."""
    bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])},
                               [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)

    def encode(text: str) -> list[int]:
        pieces = [text]
        for pattern in splits:
            out = []
            for piece in pieces:
                at = 0
                for m in regex.finditer(pattern, piece):
                    out += [piece[at:m.start()], m[0]]
                    at = m.end()
                out.append(piece[at:])
            pieces = [p for p in out if p]
        return [i for p in pieces for i in bpe.encode(p).ids]
    return encode


LLAMA_CPP_ONLY = ["smollm", "starcoder", "falcon", "deepseek-llm", "deepseek-coder",
                  "deepseek-v3", "stablelm2", "chatglm-bpe", "bloom", "viking", "chameleon"]


@pytest.mark.parametrize("pre", LLAMA_CPP_ONLY)
def test_bpe_matches_llama_cpp_split(bpe_meta, pre):
    meta = {**bpe_meta, "tokenizer.ggml.pre": pre}
    check_parity(gguf_tokenizer(meta), naive_llama_cpp(meta, PRE_SPLITS[PRE_TYPES[pre]]))


def test_smollm_matches_its_tokenizer_json(bpe_meta):
    """SmolLM2's own tokenizer.json splits digits (Digits(individual_digits)) then GPT-2's
    ByteLevel split: the "smollm" GGUF type gives exactly its ids."""
    meta = {**bpe_meta, "tokenizer.ggml.pre": "smollm"}
    ref = Tokenizer(models.BPE({t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])},
                               [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]))
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    check_parity(gguf_tokenizer(meta), lambda t: ref.encode(t).ids)
    tok = gguf_tokenizer(meta)
    pieces = tok.encode("\n  8 And").tokens
    assert "8" in pieces and not any(len(p) > 1 and "8" in p for p in pieces)


def test_unknown_pre_type_refused(bpe_meta):
    with pytest.raises(TokenizerError, match=r"'nonesuch'.*known: .*llama-bpe.*smollm"):
        gguf_tokenizer({**bpe_meta, "tokenizer.ggml.pre": "nonesuch"})


def test_add_bos_and_eos(bpe_meta, tmp_path):
    meta = {**bpe_meta, "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": True}
    ref = reference(tmp_path, meta)
    tok = gguf_tokenizer(meta)
    for text in ("Hello world", "\n  8 And"):
        ids = tok.encode(text).ids
        assert ids == ref.encode(text) and ids[0] == 1 and ids[-1] == 2
        assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.fixture(scope="module")
def spm_meta(tmp_path_factory):
    """A SentencePiece BPE model with byte fallback trained on the corpus, as GGUF metadata
    (the way llama.cpp's converter writes a Llama-2 vocabulary)."""
    return _spm_meta(tmp_path_factory.mktemp("spm"), True)[0]


def _spm_meta(d, dummy_prefix: bool):
    spm = pytest.importorskip("sentencepiece")
    (d / "c.txt").write_text("\n".join(CORPUS * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(d / "c.txt"), model_prefix=str(d / "m"), vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=0.9995, minloglevel=2,
        allow_whitespace_only_pieces=True, split_digits=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", add_dummy_prefix=dummy_prefix)
    sp = spm.SentencePieceProcessor(model_file=str(d / "m.model"))
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1
             for i in range(n)]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": sp.bos_id(),
            "tokenizer.ggml.eos_token_id": sp.eos_id(), "tokenizer.ggml.unknown_token_id": 0,
            "tokenizer.ggml.add_space_prefix": dummy_prefix}, sp


def test_sentencepiece_gguf_without_space_prefix_matches_sentencepiece(tmp_path):
    """add_space_prefix = false (a model trained without SentencePiece's dummy prefix):
    transformers' GGUF loader prepends "▁" anyway; lmforge honours the flag, as llama.cpp
    does, and gives SentencePiece's own ids."""
    meta, sp = _spm_meta(tmp_path, False)
    tok = gguf_tokenizer(meta)
    for text in CORPUS:
        ids = tok.encode(text).ids
        assert ids == [sp.bos_id()] + sp.encode(text), repr(text)
        assert tok.decode(ids, skip_special_tokens=True) == sp.decode(sp.encode(text))


@pytest.mark.parametrize("prefix", [True])
def test_sentencepiece_gguf_matches_transformers(spm_meta, tmp_path, prefix):
    meta = {**spm_meta, "tokenizer.ggml.add_space_prefix": prefix}
    ref = reference(tmp_path, meta)
    tok = gguf_tokenizer(meta)
    space = ref.convert_tokens_to_ids("\u2581")
    for text in CORPUS:
        ids = tok.encode(text).ids
        want = ref.encode(text)
        if not prefix and want[1:2] == [space]:
            # transformers' GGUF loader prepends "▁" even when the file says
            # add_space_prefix = false; llama.cpp (and lmforge) honour the flag
            want = want[:1] + want[2:]
        assert ids == want, repr(text)
        assert ids[0] == spm_meta["tokenizer.ggml.bos_token_id"]  # llama: BOS unless told no
        back = tok.decode(ids, skip_special_tokens=True)
        # (without the prefix there is no "▁" to strip: the text comes back as it was, where
        # transformers' decoder strips the text's own leading space)
        assert back == (ref.decode(ids, skip_special_tokens=True) if prefix else text)
    assert any(t.startswith("<0x") for t in tok.encode("\U00013000 \ua66e").tokens)  # byte fallback (unseen)


def test_spm_merges_order_is_transformers():
    from transformers.tokenization_utils_base import generate_merges

    tokens = ["a", "b", "c", "ab", "bc", "abc", "ca", "cab"]
    scores = [0.0, 0.0, 0.0, -1.0, -1.0, -2.0, -1.0, -3.0]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert spm_merges(tokens, scores) == generate_merges(vocab, dict(zip(tokens, scores)))
