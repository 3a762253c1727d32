"""The ``[sft]`` table of a run config: instruction-tuning a pretrained causal LM, fully or
with LoRA / QLoRA adapters (``task = "sft"``, :mod:`lmforge.tasks.sft`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..config import FieldError, from_dict
from ..finetune.lora import LoRAConfig

LEGACY_LORA_KEYS = {"lora_rank": "lora.rank", "lora_alpha": "lora.alpha",
                    "lora_dropout": "lora.dropout", "lora_targets": "lora.targets"}
"""The flat LoRA keys of older configs (``sft.lora_rank``, ``classify.lora_rank``, ...) and the
fields of the ``lora`` table they now set."""


@dataclass
class SFTConfig:
    init_from: str = ""
    """The pretrained model directory to fine-tune (required), e.g. an imported SmolLM2."""
    mode: Literal["lora", "qlora", "full"] = "lora"
    """lora: frozen base + adapters (``[sft.lora]``); qlora: base matrices stored in 4-bit NF4
    + adapters; full: every weight trains. (Older configs call it ``method``.)"""
    data: str | list[str] = ""
    """Chat JSONL ({"messages": [...]}) or prompt/response JSONL; "" = the small instruction
    set shipped with lmforge."""
    template: str = ""
    """A Jinja2 chat template; "" = the model's own (from its model directory), else ChatML."""
    max_length: int = 512
    """Tokens per conversation (longer ones are cut; ones with no assistant token left are
    dropped and counted)."""
    pack: bool = False
    """Pack several conversations into each row of max_length tokens."""
    val_fraction: float = 0.1
    """Share of the conversations held out to measure the loss before and after."""
    general_text: str = ""
    """General held-out text (a file, directory or JSONL, as `lmforge eval --data` reads) to
    measure forgetting: its perplexity before and after fine-tuning is reported next to the
    held-out loss ("" = not measured)."""
    general_max_chars: int = 20000
    """Score only the first N characters of general_text (0 = all of it)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """``[sft.lora]``, mode lora/qlora: rank, alpha, dropout, targets (module-name patterns of
    the linears to adapt), modules_to_save. (Older configs: flat ``lora_rank`` etc.)"""

    _legacy_keys: ClassVar[dict[str, str]] = {"method": "mode", **LEGACY_LORA_KEYS}

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # SFTConfig(lora={"rank": 4}) in Python
            self.lora = from_dict(LoRAConfig, self.lora, "sft.lora")
        if not 0.0 <= self.val_fraction < 1.0:
            raise FieldError("sft", "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        if self.max_length <= 1:
            raise FieldError("sft", "max_length", f"must be > 1, got {self.max_length}")
        if self.general_max_chars < 0:
            raise FieldError("sft", "general_max_chars",
                             f"must be >= 0 (0 = all), got {self.general_max_chars}")
