"""LoRA on instruction data: the adapters (lmforge.finetune) trained with the SFT objective
(lmforge.objectives.sft) on the shipped chat data (lmforge.data.chat)."""

import torch
from ft_helpers import tiny_model

from lmforge.data.chat import builtin_instructions_path, collate_sft, load_sft_data, pack_examples
from lmforge.objectives.sft import sft_loss


def test_lora_sft_overfits_the_instruction_set(chat_tokenizer):
    from lmforge.finetune import ALL_LINEAR, LoRAConfig, inject_lora

    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    rows = pack_examples(data.examples, 256)
    batch = collate_sft(rows[:2], pad_to=256)
    # untied, so that the output head can carry an adapter too: with a frozen random head the
    # logits stay near uniform whatever the blocks learn
    model = tiny_model(vocab_size=400, context_length=256, tie_embeddings=False)
    inject_lora(model, LoRAConfig(rank=8, alpha=16, targets=ALL_LINEAR + ("lm_head",)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    with torch.no_grad():
        first = sft_loss(model, batch).item()
    for _ in range(30):
        opt.zero_grad()
        loss = sft_loss(model, batch)
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0
