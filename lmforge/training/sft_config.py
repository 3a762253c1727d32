"""The ``[sft]`` table of a run config: instruction-tuning a pretrained causal LM, fully or
with LoRA / QLoRA adapters (``task = "sft"``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass
class SFTConfig:
    init_from: str = ""
    """The pretrained model directory to fine-tune (required), e.g. an imported SmolLM2."""
    method: Literal["lora", "qlora", "full"] = "lora"
    """lora: frozen base + adapters; qlora: base matrices stored in 4-bit NF4 + adapters;
    full: every weight trains."""
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
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["*.attn.q_proj", "*.attn.v_proj"])
    """Module-name patterns of the linears to adapt (globs, or re:REGEX)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"sft.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.max_length <= 1:
            raise ConfigError(f"sft.max_length: must be > 1, got {self.max_length}")
        if self.general_max_chars < 0:
            raise ConfigError(f"sft.general_max_chars: must be >= 0 (0 = all), got "
                              f"{self.general_max_chars}")
