"""T5 (v1.0: ReLU, tied head with the d_model**-0.5 factor; v1.1-style: gated GELU, no factor)
and BART in and out: small randomly initialised ``transformers`` models imported into lmforge
give the same teacher-forced logits and the same greedy generations as transformers'
``generate``; exported back, transformers loads them and computes the same logits again."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from lmforge.blocks.t5_bias import relative_buckets  # noqa: E402
from lmforge.errors import ConfigError  # noqa: E402
from lmforge.inference.translate import Seq2SeqTokens, Translator, greedy_decode  # noqa: E402
from lmforge.interop import export_hf, import_hf  # noqa: E402
from lmforge.modeldir import load_model_dir, save_model_dir  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

VOCAB = 64
TOL = 1e-4
STEPS = 10
SPECIALS = {"t5": ["<pad>", "</s>", "<unk>"], "bart": ["<s>", "<pad>", "</s>", "<unk>"]}
"""Each family's special tokens, in id order (T5: pad 0, eos 1; BART: bos 0, pad 1, eos 2)."""


def _tokenizer(specials: list[str]) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(specials)}
    vocab |= {f"w{i}": i for i in range(len(specials), VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    return tok


def _t5(gated: bool):
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=48, num_layers=3, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=12,
        feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
        tie_word_embeddings=not gated, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        initializer_factor=1.5 if gated else 2.0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # varied outputs: random norms, distinct biases, a louder end token
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.normal_(1.0, 0.5)
        model.shared.weight[1] *= 2.0
        for stack in (model.encoder, model.decoder):
            stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight.normal_(0, 1.0)
    return model


def _bart():
    torch.manual_seed(0)
    cfg = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_position_embeddings=40, scale_embedding=True, dropout=0.0,
        init_std=0.3, bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
        forced_eos_token_id=None, forced_bos_token_id=None)
    model = transformers.BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 0.1)
        model.final_logits_bias[0, 2] = 4.0  # some generations end early
        for ln in (model.model.encoder.layernorm_embedding, model.model.decoder.layernorm_embedding):
            ln.weight.normal_(1.0, 0.2)
            ln.bias.normal_(0, 0.2)
    return model


CASES = {"t5-v1.0": ("t5", lambda: _t5(False)), "t5-v1.1": ("t5", lambda: _t5(True)),
         "bart": ("bart", _bart)}


def _ids(model) -> tuple[int, int, int]:
    c = model.config
    return c.pad_token_id, c.eos_token_id, c.decoder_start_token_id


def _sources(model, n: int = 5, seed: int = 1):
    """Right-padded sources ending with the end token: (ids, mask) (n, S)."""
    pad, eos, _ = _ids(model)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 14, (n,), generator=g)
    src = torch.full((n, int(lengths.max())), pad)
    for i, k in enumerate(lengths.tolist()):
        src[i, :k - 1] = torch.randint(4, VOCAB, (k - 1,), generator=g)
        src[i, k - 1] = eos
    return src, src != pad


def _logit_diff(hf_model, ours) -> float:
    src, mask = _sources(hf_model)
    tgt = torch.randint(4, VOCAB, (len(src), 9), generator=torch.Generator().manual_seed(2))
    tgt[:, 0] = _ids(hf_model)[2]  # the decoder's start token
    with torch.no_grad():
        ref = hf_model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        return (ours(src, tgt, mask) - ref).abs().max().item()


@pytest.fixture(scope="module", params=list(CASES))
def imported(request, tmp_path_factory):
    family, make = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    hf_model = make()
    hf_model.save_pretrained(tmp / "hf")
    specials = SPECIALS[family]
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(specials), eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>").save_pretrained(tmp / "hf")
    lm = load_model_dir(import_hf(tmp / "hf", tmp / "lmforge"))
    return request.param, hf_model, lm, tmp


def test_import_config_and_logits(imported):
    case, hf_model, lm, _ = imported
    cfg = lm.config
    if case.startswith("t5"):
        assert (cfg.positional, cfg.norm, cfg.prenorm, cfg.bias) == ("t5_relative", "rmsnorm", True, False)
        assert cfg.activation == ("geglu_tanh" if case == "t5-v1.1" else "relu")
        assert (cfg.n_encoder_layer, cfg.n_layer, cfg.dim_head) == (3, 2, 16)
    else:
        assert (cfg.positional, cfg.prenorm, cfg.embed_norm, cfg.output_bias) == (
            "learned", False, True, True)
        assert cfg.scale_embeddings and cfg.context_length == 40
    pad, eos, start = _ids(hf_model)
    tokens = Seq2SeqTokens.from_tokenizer(lm.tokenizer, lm.meta)
    assert (tokens.pad, tokens.eos, tokens.start) == (pad, eos, start)
    assert _logit_diff(hf_model, lm.model) <= TOL


def test_greedy_matches_generate(imported):
    """lmforge's greedy decoding never writes the start or padding token (except the end
    token, BART's start): transformers does the same with ``suppress_tokens``."""
    _, hf_model, lm, _ = imported
    pad, eos, start = _ids(hf_model)
    src, mask = _sources(hf_model, 6, seed=3)
    ref = hf_model.generate(input_ids=src, attention_mask=mask.long(), max_new_tokens=STEPS,
                            num_beams=1, do_sample=False, suppress_tokens=[pad])
    expected = []
    for row in ref[:, 1:].tolist():
        expected.append(row[:row.index(eos)] if eos in row else row)
    ours = greedy_decode(lm.model, src, mask, start_id=start, eos_id=eos, pad_id=pad,
                         limits=torch.full((len(src),), STEPS))
    assert ours == expected
    assert len({len(x) for x in ours}) > 1  # some end early, some run to the budget
    assert any(len(set(x)) > 2 for x in ours)
    text = Translator(lm.model, lm.tokenizer, lm.meta).translate("w5 w6 w7")
    assert isinstance(text, str)


def test_export_round_trip(imported):
    case, hf_model, lm, tmp = imported
    out = export_hf(lm.path, tmp / "hf-out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == case.split("-")[0]
    pad, eos, start = _ids(hf_model)
    assert [config[k] for k in ("pad_token_id", "eos_token_id", "decoder_start_token_id")] == [
        pad, eos, start]
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert type(back) is type(hf_model)
    assert _logit_diff(back, lm.model) <= TOL
    assert _logit_diff(hf_model, load_model_dir(out.parent / "lmforge").model) <= TOL


@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_match_transformers(bidirectional):
    rel = torch.arange(-300, 300)[None, :]
    for n, far in ((32, 128), (8, 12), (6, 20)):
        ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
            rel, bidirectional=bidirectional, num_buckets=n, max_distance=far)
        assert torch.equal(relative_buckets(rel, bidirectional, n, far), ref)


def test_bad_bucket_settings_are_refused():
    with pytest.raises(ConfigError, match="relative_buckets"):
        ModelConfig(arch="seq2seq", vocab_size=10, positional="t5_relative", relative_buckets=2)


@pytest.mark.parametrize("tie", [True, False])
def test_lmforge_t5_model_exports(tmp_path, tie):
    """A T5-style model built by lmforge (tied: written with T5's d_model**-0.5 factor taken
    out of the final norm; untied: its own output matrix, no factor)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="seq2seq", vocab_size=VOCAB, context_length=32, d_model=32, n_layer=2,
                      encoder_layers=2, n_head=4, d_ff=48, norm="rmsnorm", norm_eps=1e-6,
                      positional="t5_relative", relative_buckets=8, relative_max_distance=12,
                      bias=False, activation="geglu_tanh", tie_embeddings=tie, init_std=0.2)
    model = build_model(cfg).eval()
    meta = {"seq2seq_tokens": {"start": "<pad>", "eos": "</s>", "pad": "<pad>"}}
    save_model_dir(tmp_path / "lmforge", model, _tokenizer(SPECIALS["t5"]), meta)
    back = transformers.T5ForConditionalGeneration.from_pretrained(
        export_hf(tmp_path / "lmforge", tmp_path / "hf")).eval()
    assert back.config.feed_forward_proj == "gated-gelu"
    assert _logit_diff(back, model) <= TOL
