"""Parameter-efficient fine-tuning: LoRA adapters, 4-bit NF4 base weights (QLoRA) and
supervised instruction-tuning data. See docs/finetune.md."""

from .lora import (ALL_LINEAR, ATTENTION_ALL, ATTENTION_QV, LoRAConfig, LoRALinear, LoRAReport,
                   base_fingerprint, inject_lora, load_adapter, lora_layers, lora_report,
                   lora_state_dict, merge_lora, merged_copy, read_adapter_config, save_adapter,
                   saved_modules, set_lora_enabled)
from .nf4 import (NF4_LEVELS, NF4Linear, NF4Report, NF4Weight, dequantize_nf4,
                  load_model_dir_nf4, nf4_levels, nf4_memory, quantize_nf4, quantize_nf4_weight)
from .sft import (CHATML_TOKENS, DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, ChatTemplate, SFTData, SFTExample,
                  builtin_instructions_path, collate, encode_conversation, find_chat_template,
                  load_sft_data, pack_examples, read_sft_jsonl, sft_batches, sft_loss)

__all__ = [
    "ALL_LINEAR", "ATTENTION_ALL", "ATTENTION_QV", "CHATML_TOKENS", "ChatTemplate", "DEFAULT_CHAT_TEMPLATE",
    "IGNORE_INDEX", "LoRAConfig", "LoRALinear", "LoRAReport", "NF4Linear", "NF4Report",
    "NF4Weight", "NF4_LEVELS", "SFTData", "SFTExample", "base_fingerprint",
    "builtin_instructions_path", "collate", "dequantize_nf4", "encode_conversation",
    "find_chat_template", "inject_lora", "load_adapter", "load_sft_data", "lora_layers",
    "lora_state_dict", "merge_lora", "nf4_levels", "nf4_memory", "pack_examples",
    "quantize_nf4", "quantize_nf4_weight", "read_adapter_config", "read_sft_jsonl",
    "save_adapter", "set_lora_enabled", "sft_batches", "sft_loss",
    "load_model_dir_nf4", "lora_report", "merged_copy", "saved_modules",
]
