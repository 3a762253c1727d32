import pytest
import torch
from ft_helpers import tiny_model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 97, (2, 16), generator=g)  # B*T < 128: the unfused q/k/v path


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A byte-level BPE trained on the shipped instruction set, with the ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmforge.data.chat import ChatTemplate, builtin_instructions_path, read_sft_jsonl

    texts = [ChatTemplate().render(c) for c in read_sft_jsonl(builtin_instructions_path())]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok
