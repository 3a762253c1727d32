"""MarianMT in and out: a small randomly initialised ``transformers`` MarianMTModel imported
into lmforge gives the same teacher-forced logits, the same greedy translations and the same
beam-search translations as transformers' ``generate``; exported back, transformers loads it
and computes the same logits again. lmforge's own encoder–decoders export too."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from lmforge.errors import ConfigError, TokenizerError  # noqa: E402
from lmforge.inference.translate import (Seq2SeqTokens, Translator, beam_search,  # noqa: E402
                                         greedy_decode)
from lmforge.interop import export_hf, import_hf  # noqa: E402
from lmforge.interop.hf.marian import config_from_hf, state_dict_from_hf  # noqa: E402
from lmforge.modeldir import load_model_dir, save_model_dir  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

VOCAB, EOS, UNK, PAD = 100, 0, 1, 99  # Marian's layout: </s> 0, <unk> 1, <pad> last
TOL = 1e-4
STEPS = 16  # new tokens for greedy and beam search, the same budget on both sides


def _tokenizer() -> Tokenizer:
    vocab = {"</s>": EOS, "<unk>": UNK, **{f"w{i}": i for i in range(2, PAD)}, "<pad>": PAD}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["</s>", "<unk>", "<pad>"])
    return tok


def _marian(tie: bool = True, eos_bias: float = 2.5) -> "transformers.MarianMTModel":
    """Random weights (large enough that the output depends on the source) and a random
    logit bias; ``eos_bias`` on the end token makes some translations end early."""
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, activation_function="swish",
        scale_embedding=True, dropout=0.0, init_std=0.3, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, forced_eos_token_id=None, tie_word_embeddings=tie)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 0.1)
        model.final_logits_bias[0, EOS] = eos_bias
    return model


def _save(model, path: Path) -> Path:
    model.save_pretrained(path)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(), eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(path)
    return path


def _sources(n: int = 6, seed: int = 1):
    """Right-padded sources ending with </s>, of different lengths: (ids, mask) (n, S)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (n,), generator=g)
    src = torch.full((n, int(lengths.max())), PAD)
    for i, n_tok in enumerate(lengths.tolist()):
        src[i, :n_tok - 1] = torch.randint(2, PAD, (n_tok - 1,), generator=g)
        src[i, n_tok - 1] = EOS
    return src, src != PAD


def _logit_diff(hf_model, ours) -> float:
    src, mask = _sources()
    g = torch.Generator().manual_seed(2)
    tgt = torch.randint(0, PAD, (len(src), 10), generator=g)
    tgt[:, 0] = PAD  # the decoder's start token
    with torch.no_grad():
        ref = hf_model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        return (ours(src, tgt, mask) - ref).abs().max().item()


def _hf_outputs(sequences: torch.Tensor) -> list[list[int]]:
    """generate's rows without the start token, cut before the end token (then padding)."""
    out = []
    for row in sequences[:, 1:].tolist():
        out.append(row[:row.index(EOS)] if EOS in row else row)
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("marian")
    hf_model = _marian()
    src = _save(hf_model, tmp / "hf")
    lm = load_model_dir(import_hf(src, tmp / "lmforge"))
    return hf_model, lm, tmp


def test_import_config_and_tokens(imported):
    _, lm, _ = imported
    cfg = lm.config
    assert (cfg.arch, cfg.prenorm, cfg.positional, cfg.activation) == (
        "seq2seq", False, "sinusoidal", "silu")
    assert cfg.scale_embeddings and cfg.output_bias and cfg.tie_embeddings and cfg.share_embeddings
    assert (cfg.n_layer, cfg.n_encoder_layer, cfg.d_ff, cfg.context_length) == (2, 2, 64, 64)
    t = lm.meta.seq2seq_tokens
    assert (t.start, t.eos, t.pad) == ("<pad>", "</s>", "<pad>")
    assert lm.meta.source.family == "marian"
    tokens = Seq2SeqTokens.from_tokenizer(lm.tokenizer, lm.meta)
    assert (tokens.start, tokens.eos, tokens.pad) == (PAD, EOS, PAD)


def test_teacher_forced_logits_match(imported):
    hf_model, lm, _ = imported
    assert _logit_diff(hf_model, lm.model) <= TOL


def test_greedy_matches_generate(imported):
    hf_model, lm, _ = imported
    src, mask = _sources(8, seed=3)
    ref = hf_model.generate(input_ids=src, attention_mask=mask.long(), max_new_tokens=STEPS,
                            num_beams=1, do_sample=False)
    ours = greedy_decode(lm.model, src, mask, start_id=PAD, eos_id=EOS,
                         limits=torch.full((len(src),), STEPS))
    assert ours == _hf_outputs(ref)
    assert len({len(x) for x in ours}) > 1  # some end early, some run to the budget


@pytest.mark.parametrize("early_stopping,length_penalty", [(True, 1.0), (False, 0.6)])
def test_beam_search_matches_generate(imported, early_stopping, length_penalty):
    """transformers' beam search keeps the same 2K candidates per step, sets aside the
    end-token candidates among the top K, scores finished hypotheses by logp / length **
    penalty with the same length, and at the budget scores the running beams the same way;
    so the best hypothesis is the same."""
    hf_model, lm, _ = imported
    src, mask = _sources(8, seed=4)
    ref = hf_model.generate(input_ids=src, attention_mask=mask.long(), max_new_tokens=STEPS,
                            num_beams=4, do_sample=False, early_stopping=early_stopping,
                            length_penalty=length_penalty)
    ours = beam_search(lm.model, src, mask, start_id=PAD, eos_id=EOS,
                       limits=torch.full((len(src),), STEPS), beam_size=4,
                       length_penalty=length_penalty, early_stopping=early_stopping)
    assert ours == _hf_outputs(ref)


def test_beam_search_budget_step():
    """When a sentence reaches its token budget, the beams still running compete with the
    hypotheses that end at that step, as in transformers: same outputs, also with an end-token
    bias that makes hypotheses end at the budget step often."""
    hf_model = _marian(eos_bias=3.0)
    cfg = config_from_hf(hf_model.config.to_dict())
    ours = build_model(cfg).eval()
    missing, unexpected = ours.load_state_dict(state_dict_from_hf(hf_model.state_dict(), cfg),
                                               strict=False)
    assert set(missing) <= ours.tied_keys() and not unexpected
    for seed in range(6):
        src, mask = _sources(8, seed=seed)
        ref = _hf_outputs(hf_model.generate(input_ids=src, attention_mask=mask.long(),
                                            max_new_tokens=STEPS, num_beams=4, do_sample=False,
                                            early_stopping=True))
        out = beam_search(ours, src, mask, start_id=PAD, eos_id=EOS, beam_size=4,
                          limits=torch.full((len(src),), STEPS))
        assert out == ref


def test_translator_runs_on_import(imported):
    _, lm, _ = imported
    out = Translator(lm.model, lm.tokenizer, lm.meta).translate(["w5 w6 w7", "w9"])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_export_round_trip(imported):
    hf_model, lm, tmp = imported
    out = export_hf(lm.path, tmp / "hf-out")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MarianMTModel"] and config["model_type"] == "marian"
    ids = [config[k] for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id")]
    assert ids == [PAD, PAD, EOS]
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert isinstance(back, transformers.MarianMTModel)
    assert _logit_diff(back, lm.model) <= TOL
    # the weights are Marian's again, channel order included
    for name, t in hf_model.state_dict().items():
        if "embed_positions" not in name:
            assert torch.allclose(back.state_dict()[name], t), name
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("w5 w6").input_ids == [5, 6, EOS]  # sources end with </s>, as Marian's do


def test_untied_and_stored_position_table(tmp_path):
    """Untied output matrix; a stored position table that is not Marian's (transformers
    loads it as it is) is imported as learned positions and exported as a table again."""
    hf_model = _marian(tie=False)
    path = _save(hf_model, tmp_path / "hf")
    weights = load_file(str(path / "model.safetensors"))
    table = torch.randn(64, 32) * 0.5
    weights["model.decoder.embed_positions.weight"] = table
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf_model = transformers.MarianMTModel.from_pretrained(path).eval()
    lm = load_model_dir(import_hf(path, tmp_path / "lmforge"))
    assert lm.config.positional == "learned" and not lm.config.tie_embeddings
    enc, dec = hf_model.model.encoder.embed_tokens.weight, hf_model.model.decoder.embed_tokens.weight
    # transformers 5 ties nothing without tie_word_embeddings: each side reads its own table
    assert lm.config.share_embeddings == torch.equal(enc, dec)
    assert _logit_diff(hf_model, lm.model) <= TOL
    back = transformers.MarianMTModel.from_pretrained(export_hf(lm.path, tmp_path / "out")).eval()
    assert torch.equal(back.model.decoder.embed_positions.weight, table)
    assert _logit_diff(back, lm.model) <= TOL


def test_lmforge_model_exports(tmp_path):
    """A model built by lmforge (interleaved sinusoidal positions, gelu, no output bias)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="seq2seq", vocab_size=VOCAB, context_length=64, d_model=48, n_layer=2,
                      encoder_layers=3, n_head=4, d_ff=96, prenorm=False, positional="sinusoidal",
                      scale_embeddings=True, init_std=0.1)
    model = build_model(cfg).eval()
    meta = {"seq2seq_tokens": {"start": "<pad>", "eos": "</s>", "pad": "<pad>"}}
    save_model_dir(tmp_path / "lmforge", model, _tokenizer(), meta)
    back = transformers.MarianMTModel.from_pretrained(
        export_hf(tmp_path / "lmforge", tmp_path / "hf")).eval()
    assert back.config.encoder_layers == 3 and back.config.activation_function == "gelu"
    assert _logit_diff(back, model) <= TOL


def test_unsupported_options_are_refused(tmp_path):
    base = _marian().config.to_dict()
    with pytest.raises(ConfigError, match=r"normalize_before=True .*supported: False"):
        config_from_hf({**base, "normalize_before": True})
    with pytest.raises(ConfigError, match=r"share_encoder_decoder_embeddings=False"):
        config_from_hf({**base, "share_encoder_decoder_embeddings": False})
    with pytest.raises(ConfigError, match=r"encoder_ffn_dim=128 and decoder_ffn_dim=64 differ"):
        config_from_hf({**base, "encoder_ffn_dim": 128})
    with pytest.raises(ConfigError, match=r"activation_function='tanh'.*supported"):
        config_from_hf({**base, "activation_function": "tanh"})
    # Marian's own SentencePiece tokenizer files without a tokenizer.json are read (parity:
    # tests/interop/test_tokenizer_parity_spm.py); broken ones are one clear error
    path = tmp_path / "hf"
    _marian().save_pretrained(path)
    for name in ("source.spm", "target.spm", "vocab.json"):
        (path / name).write_bytes(b"")
    with pytest.raises(ConfigError, match=r"vocab\.json cannot be read as JSON"):
        import_hf(path, tmp_path / "out")
    (path / "vocab.json").write_text('{"</s>": 0, "<unk>": 1}')
    with pytest.raises(TokenizerError, match=r"source\.spm cannot be read as a SentencePiece"):
        import_hf(path, tmp_path / "out")
    # a pre-norm lmforge encoder–decoder has no MarianMT equivalent
    cfg = ModelConfig(arch="seq2seq", vocab_size=VOCAB, d_model=32, n_layer=1, n_head=4)
    save_model_dir(tmp_path / "prenorm", build_model(cfg), _tokenizer(),
                   {"seq2seq_tokens": {"start": "<pad>"}})
    with pytest.raises(ConfigError, match=r"for marian: prenorm=True \(needs False\)"):
        export_hf(tmp_path / "prenorm", tmp_path / "prenorm-hf")
