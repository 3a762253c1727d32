"""lmforge's decoder with GPT-2's weights computes GPT-2: logits and greedy tokens match
transformers' GPT2LMHeadModel (randomly initialised inside the test)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.interop.hf.gpt2 import config_from_hf, state_dict_from_hf  # noqa: E402
from lmforge.models import build_model  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=3,
                                     n_head=4, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    cfg = config_from_hf(hf_cfg.to_dict())
    ours = build_model(cfg).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), cfg))
    return hf, ours


def test_logits_match_transformers(pair):
    hf, ours = pair
    x = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        ref = hf(x).logits
    assert (ours(x) - ref).abs().max().item() <= 1e-4


def test_greedy_generation_matches_transformers(pair):
    hf, ours = pair
    x = torch.randint(1, 97, (1, 6))
    ref = hf.generate(x, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    out = generate(ours, x, GenerationConfig(max_new_tokens=20, temperature=0))
    assert torch.equal(out, ref[:, 6:])


def test_repetition_penalty_in_greedy_generation_matches_transformers(pair):
    hf, ours = pair
    torch.manual_seed(1)
    x = torch.randint(0, 97, (2, 6))
    ref = hf.generate(x, max_new_tokens=15, min_new_tokens=15, do_sample=False,
                      repetition_penalty=1.5, pad_token_id=0)
    out = generate(ours, x, GenerationConfig(max_new_tokens=15, temperature=0,
                                             repetition_penalty=1.5))
    assert torch.equal(out, ref[:, 6:])
    plain = generate(ours, x, GenerationConfig(max_new_tokens=15, temperature=0))
    assert not torch.equal(plain, out)  # the penalty changed the output
