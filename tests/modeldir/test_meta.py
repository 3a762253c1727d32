"""meta.json as a typed ModelMeta: round trips, today's version-less layouts read with nothing
lost, one-line errors for wrong types, generation settings kept by every writer, and the
model's sampling defaults in the effective settings."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.cli.main import main
from lmforge.errors import ConfigError
from lmforge.inference.settings import (LMFORGE_SAMPLING, effective_sampling,
                                        generation_settings)
from lmforge.modeldir import (Generation, ModelMeta, SentenceEmbedding, Source, load_model_dir,
                              meta_from_dict, read_meta, save_model_dir, update_meta)
from lmforge.modeldir.meta import FORMAT_VERSION, legacy_view, meta_to_dict
from lmforge.models import ModelConfig, build_model

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
WORDS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "c", "d", "e"]

TRAINED = {"task": "causal-lm", "data": {"paths": ["x.txt"], "n_tokens": 100},
           "tokenizer": {"kind": "bpe", "vocab_size": 8}, "parameters": 1234,
           "run_config": {"train": {"lr": 0.001}}, "machine": {"device": "cpu"},
           "training": {"step": 10, "val_loss": 2.5}, "saved_at": "2024-01-01T00:00:00+0000",
           "lmforge_version": "0.1.0"}
HF_IMPORT = {"imported_from": {"format": "huggingface", "path": "/src", "family": "llama",
                               "model_type": "llama", "dtype": "bfloat16",
                               "special_tokens": {"eos_token": "<|im_end|>"},
                               "config": {"model_type": "llama", "hidden_size": 64}},
             "generation": {"bos_token_id": 1, "eos_token_ids": [2, 0], "pad_token_id": 2,
                            "add_bos_token": False, "chat_template": TEMPLATE}}
BERT_SOURCE = {"format": "hf-bert", "path": "/minilm", "architectures": ["BertModel"],
               "family": "bert", "model_type": "bert", "dtype": "float32"}
HF_BERT = {"task": "import", "source": BERT_SOURCE, "imported_from": BERT_SOURCE,
           "parameters": 22_000_000, "sentence_embedding": {"pooling": "mean", "normalize": True}}
AVERAGED = {"task": "classify", "classifier": {"labels": ["neg", "pos"], "max_len": 128},
            "trainable_share": 1.0, "lora": {"r": 8},
            "averaged_from": [{"path": "a", "weight": 0.5}, {"path": "b", "weight": 0.5}]}


def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(WORDS[:3])
    return tok


def decoder_dir(path, meta):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=8, d_model=16, n_layer=1, n_head=2, context_length=16)
    return save_model_dir(path, build_model(cfg), tokenizer(), meta)


def test_round_trip_through_meta_json(tmp_path):
    meta = ModelMeta(task="import", parameters=5,
                     source=Source(kind="imported", format="gguf", path="/m.gguf",
                                   tensor_types=["Q4_1"], special_tokens={"bos_token": "<s>"}),
                     generation=Generation(eos_token_ids=[2], chat_template=TEMPLATE,
                                           temperature=0.2, top_p=0.9, stop=["\n\n"]),
                     sentence_embedding=SentenceEmbedding(pooling="cls"), eval={"acc": 0.5},
                     extra={"note": {"free": [1, 2]}})
    out = decoder_dir(tmp_path / "m", meta)
    data = json.loads((out / "meta.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 2
    assert data["source"]["kind"] == "imported" and data["note"] == {"free": [1, 2]}  # extra
    back = read_meta(out)
    assert back.saved_at and back.lmforge_version  # stamped on write
    assert back == ModelMeta(**{**vars(meta), "saved_at": back.saved_at,
                                "lmforge_version": back.lmforge_version, "files": back.files})


@pytest.mark.parametrize("layout", [TRAINED, HF_IMPORT, HF_BERT, AVERAGED],
                         ids=["trained", "hf-import", "hf-bert", "averaged"])
def test_version_less_layouts_load_with_nothing_lost(layout):
    meta = meta_from_dict(layout)
    view = legacy_view(meta)
    for key, value in layout.items():
        if key != "source":  # hf_bert's duplicate of imported_from: one record now
            assert view[key] == value, key
    assert "imported_from" not in layout or meta.source.kind == "imported"
    # and the typed form says the same a second time round (version 2 now)
    assert meta_from_dict(json.loads(json.dumps(meta_to_dict(meta)))) == meta


def test_legacy_provenance_becomes_one_typed_record():
    bert = meta_from_dict(HF_BERT)
    assert bert.source == Source(kind="imported", **BERT_SOURCE)
    assert bert.sentence_embedding == SentenceEmbedding(pooling="mean", normalize=True)
    hf = meta_from_dict(HF_IMPORT)
    assert hf.generation.chat_template == TEMPLATE and hf.generation.eos_token_ids == [2, 0]
    avg = meta_from_dict({**AVERAGED, "imported_from": {"format": "gguf"}})
    assert avg.source.kind == "averaged" and [i.weight for i in avg.source.inputs] == [0.5, 0.5]
    assert avg.imported_source().format == "gguf"  # an averaged import is still an import's
    assert avg.extra == {"trainable_share": 1.0, "lora": {"r": 8}}
    assert meta_from_dict(TRAINED).source is None


def test_unknown_keys_kept_in_extra_at_any_level():
    meta = meta_from_dict({"format_version": 2, "future": 1, "generation": {"min_p": 0.05},
                           "extra": {"mine": True}})
    assert meta.extra == {"mine": True, "future": 1, "generation.min_p": 0.05}
    assert meta.generation == Generation()


@pytest.mark.parametrize("bad, field", [({"generation": {"temperature": "hot"}}, "generation.temperature"),
                                        ({"parameters": "many"}, "parameters"),
                                        ({"source": {"kind": "stolen"}}, "source.kind"),
                                        ({"sentence_embedding": ["mean"]}, "sentence_embedding")])
def test_wrong_type_is_a_one_line_error_naming_the_file_and_field(tmp_path, bad, field):
    out = decoder_dir(tmp_path / "m", None)
    (out / "meta.json").write_text(json.dumps({"format_version": 2, **bad}))
    with pytest.raises(ConfigError) as e:
        load_model_dir(out)
    message = str(e.value)
    assert str(out / "meta.json") in message and f"{field}:" in message and "\n" not in message


def test_update_meta_checks_typed_fields_and_keeps_the_rest(tmp_path):
    out = decoder_dir(tmp_path / "m", HF_IMPORT)
    meta = update_meta(out, eval={"loss": 1.5}, test={"bleu": 20.0})
    assert read_meta(out) == meta
    assert meta.eval == {"loss": 1.5} and meta.extra == {"test": {"bleu": 20.0}}
    assert meta.generation.chat_template == TEMPLATE  # untouched fields stay
    with pytest.raises(ConfigError, match="parameters"):
        update_meta(out, parameters="x")


def _assert_import_settings(lm):
    s = generation_settings(lm.meta, lm.tokenizer)
    assert (s.eos_token_ids, s.chat_template, s.bos_token_id) == ([2, 0], TEMPLATE, 1)
    assert lm.meta.imported_source().path == "/src"


def test_generation_settings_survive_average_and_resave(tmp_path):
    a = decoder_dir(tmp_path / "a", HF_IMPORT)
    b = decoder_dir(tmp_path / "b", HF_IMPORT)
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "soup")]) == 0
    soup = load_model_dir(tmp_path / "soup")
    _assert_import_settings(soup)
    assert soup.meta.source.kind == "averaged"
    assert [i.path for i in soup.meta.source.inputs] == [str(a), str(b)]
    lm = load_model_dir(a)
    resaved = load_model_dir(save_model_dir(tmp_path / "again", lm.model, lm.tokenizer, lm.meta))
    _assert_import_settings(resaved)
    assert resaved.meta.generation == lm.meta.generation


def test_trained_model_falls_back_to_the_tokenizer_end_token():
    s = generation_settings(ModelMeta(), tokenizer())
    assert s.eos_token_ids == [0] and s.chat_template is None
    assert generation_settings(ModelMeta(generation=Generation(eos_token_ids=[])),
                               tokenizer()).eos_token_ids == []


def test_effective_sampling_user_over_model_over_lmforge():
    model = ModelMeta(generation=Generation(temperature=0.2, top_p=0.95))
    s = effective_sampling(model)
    assert (s.temperature, s.top_p, s.top_k) == (0.2, 0.95, LMFORGE_SAMPLING.top_k)
    assert s.origin == {"temperature": "model", "top_k": "lmforge", "top_p": "model",
                        "repetition_penalty": "lmforge"}
    s = effective_sampling(model, temperature=1.0, top_k=40)
    assert (s.temperature, s.top_k, s.top_p) == (1.0, 40, 0.95)
    assert s.origin["temperature"] == "user" and s.origin["top_k"] == "user"
    assert effective_sampling(ModelMeta()) == LMFORGE_SAMPLING
    greedy = ModelMeta(generation=Generation(do_sample=False, temperature=0.6))
    assert effective_sampling(greedy).temperature == 0.0  # HF: do_sample = false is greedy
    assert effective_sampling(greedy, temperature=0.9).temperature == 0.9


def test_generation_config_sampling_reaches_the_effective_settings(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmforge.interop import export_hf, import_hf

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=8, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    src = tmp_path / "hf"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(src)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer(), eos_token="<|im_end|>",
                                         chat_template=TEMPLATE).save_pretrained(src)
    (src / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": 2, "do_sample": True, "temperature": 0.2, "top_p": 0.9, "top_k": 50,
         "repetition_penalty": 1.1}))
    lm = load_model_dir(import_hf(src, tmp_path / "lm"))
    gen = lm.meta.generation
    assert (gen.temperature, gen.top_p, gen.top_k, gen.repetition_penalty, gen.do_sample) == \
        (0.2, 0.9, 50, 1.1, True)
    assert gen.chat_template == TEMPLATE and 2 in gen.eos_token_ids
    s = effective_sampling(lm.meta, top_p=0.5)
    assert (s.temperature, s.top_k, s.top_p, s.repetition_penalty) == (0.2, 50, 0.5, 1.1)
    out = export_hf(tmp_path / "lm", tmp_path / "back")  # and back out to Hugging Face
    exported = json.loads((out / "generation_config.json").read_text())
    assert exported["temperature"] == 0.2 and exported["top_k"] == 50
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == TEMPLATE
