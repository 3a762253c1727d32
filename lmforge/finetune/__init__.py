"""Parameter-efficient fine-tuning: LoRA adapters and 4-bit NF4 base weights (QLoRA), injected
into a model by module name. Instruction data is :mod:`lmforge.data.chat`, its objective
:mod:`lmforge.objectives.sft`. See docs/finetune.md."""

from .lora import (ALL_LINEAR, ATTENTION_ALL, ATTENTION_QV, LoRAConfig, LoRALinear, LoRAReport,
                   inject_lora, lora_layers, lora_report, lora_state_dict, merge_lora,
                   merged_copy, saved_modules, set_lora_enabled)
from .adapter import base_fingerprint, load_adapter, read_adapter_config, save_adapter
from .merge import load_with_adapter, merge_adapter_into
from .nf4 import (NF4_LEVELS, NF4Linear, NF4Report, NF4Weight, dequantize_nf4,
                  load_model_dir_nf4, nf4_levels, nf4_memory, quantize_nf4, quantize_nf4_weight)

__all__ = [
    "ALL_LINEAR", "ATTENTION_ALL", "ATTENTION_QV", "LoRAConfig", "LoRALinear", "LoRAReport",
    "NF4Linear", "NF4Report", "NF4Weight", "NF4_LEVELS", "base_fingerprint", "dequantize_nf4",
    "inject_lora", "load_adapter", "load_with_adapter", "merge_adapter_into", "load_model_dir_nf4", "lora_layers", "lora_report",
    "lora_state_dict", "merge_lora", "merged_copy", "nf4_levels", "nf4_memory", "quantize_nf4",
    "quantize_nf4_weight", "read_adapter_config", "save_adapter", "saved_modules",
    "set_lora_enabled",
]
