"""LoRA: low-rank adapters on frozen linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation
of Large Language Models").

A targeted linear layer y = W x + b becomes

    y = W x + b + (alpha / r) * B A dropout(x)        A: (r, in), B: (out, r)

with W, b frozen and only A and B trained. A starts Kaiming-uniform and B at zero, so the
adapted model computes exactly what the base model computes until the first update. The base
may be a plain ``nn.Linear`` or an :class:`~lmforge.finetune.nf4.NF4Linear` (QLoRA).

Typical use::

    report = inject_lora(model, LoRAConfig(rank=8))   # replaces layers in place, freezes the rest
    ... train (only requires_grad parameters reach the optimiser) ...
    save_adapter(model, "adapters/run1")              # a few hundred KiB
    load_adapter(other_copy_of_base, "adapters/run1") # checks the base fingerprint
    merge_lora(model)                                 # plain nn.Linear again, for export
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FieldError
from ..errors import ConfigError
from ..models.transformer import count_params
from ._modules import (check_not_tied, compile_patterns, generalise, select, set_submodule,
                       tied_parameter_names)
from .nf4 import NF4Linear

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
ADAPTER_FORMAT = "lmforge-lora"

ATTENTION_QV: tuple[str, ...] = ("*.attn.q_proj", "*.attn.v_proj")
"""The LoRA paper's choice (§7.1): queries and values of every self-attention layer."""
ATTENTION_ALL: tuple[str, ...] = ("*.attn.q_proj", "*.attn.k_proj", "*.attn.v_proj", "*.attn.o_proj")
ALL_LINEAR: tuple[str, ...] = ("*attn.*_proj", "*.ff.*_proj")
"""Every projection of every block, as QLoRA recommends (§4) to match full fine-tuning."""


@dataclass
class LoRAConfig:
    """The adapters: the ``[sft.lora]`` and ``[classify.lora]`` tables of a run config, and
    the argument of :func:`inject_lora`. Validated once, here (a bad value is a ConfigError
    naming the field: ``LoRAConfig.rank: ...`` in Python, ``sft.lora.rank: ...`` in a config)."""

    rank: int = 8
    """r: the inner dimension of the update B A (trainable params per layer: r * (in + out))."""
    alpha: float = 16.0
    """The update is scaled by alpha / rank, so changing the rank needs no new learning rate."""
    dropout: float = 0.0
    """Dropout on the adapter's input (training only); the base path sees no dropout."""
    targets: list[str] | str = field(default_factory=lambda: list(ATTENTION_QV))
    """Module-name patterns of the linear layers to adapt: globs (``*.attn.q_proj``; ``*``
    matches dots too) or ``re:<regex>`` matched against the full name (one string = one
    pattern). Default: the query and value projections of every block. See also
    ``ATTENTION_ALL`` and ``ALL_LINEAR``."""
    modules_to_save: list[str] | str = field(default_factory=list)
    """Module-name patterns of whole modules that stay fully trainable and are saved with the
    adapter (PEFT's ``modules_to_save``), e.g. ``["head"]`` for a new classifier head."""

    def __post_init__(self) -> None:
        self.targets = [self.targets] if isinstance(self.targets, str) else list(self.targets)
        self.modules_to_save = [self.modules_to_save] if isinstance(self.modules_to_save, str) \
            else list(self.modules_to_save)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise FieldError(self, "rank", f"must be a positive integer, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not self.alpha > 0:
            raise FieldError(self, "alpha", f"must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise FieldError(self, "dropout", f"must be in [0, 1), got {self.dropout!r}")
        if not self.targets:
            raise FieldError(self, "targets", "give at least one module-name pattern, e.g. "
                             '["*.attn.q_proj", "*.attn.v_proj"]')

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Module):
    """A base linear layer (``nn.Linear`` or ``NF4Linear``) plus a trainable low-rank update.

    ``lora_A`` (r, in) and ``lora_B`` (out, r) are fp32 parameters (or the base dtype when
    that is float64); the update is computed in their dtype and cast to the output's dtype.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, (nn.Linear, NF4Linear)):
            raise TypeError(f"LoRALinear wraps nn.Linear or NF4Linear, not {type(base).__name__}")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        ref = base.weight if isinstance(base, nn.Linear) else base.packed
        dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=ref.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=ref.device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and PEFT initialise A
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True
        self.merged = False
        self.targets: tuple[str, ...] = ()  # set by inject_lora: the patterns that matched
        self.register_buffer("_original_weight", None, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (fp bases only): code that reads ``.weight`` for dtype/device."""
        return self.base.weight

    def delta_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(out, in) the update (alpha / r) B A, computed in float64, cast to ``dtype``."""
        return ((self.lora_B.detach().double() @ self.lora_A.detach().double())
                * self.scaling).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = self.base(x)  # (..., out)
        if self.merged or not self.enabled:
            return y
        h = self.lora_dropout(x).to(self.lora_A.dtype)
        update = F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling  # (..., out)
        return y + update.to(y.dtype)

    @torch.no_grad()
    def merge(self, keep_original: bool = True) -> None:
        """Fold the update into the base weight (fp base only). With ``keep_original`` the
        original weight is kept so that :meth:`unmerge` restores it bit for bit."""
        if self.merged:
            return
        if not isinstance(self.base, nn.Linear):
            raise ConfigError("merge: an NF4 base cannot absorb the update in 4 bits; use "
                              "merge_lora(model), which builds a full-precision layer")
        w = self.base.weight
        self._original_weight = w.detach().clone() if keep_original else None
        w.copy_((w.double() + self.delta_weight(torch.float64)).to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before :meth:`merge`."""
        if not self.merged:
            return
        if self._original_weight is None:
            raise ConfigError("unmerge: merge(keep_original=False) dropped the original weight")
        self.base.weight.copy_(self._original_weight)
        self._original_weight = None
        self.merged = False

    def merged_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing base + update. An fp base absorbs the update in place
        and is returned (no second copy of the weight: merging a whole model needs no extra
        memory; this adapter layer is spent afterwards); an NF4 base is dequantised into a new
        fp32 layer."""
        if isinstance(self.base, NF4Linear):
            w, bias = self.base.dequantize(torch.float32), self.base.bias
            out = nn.Linear(self.in_features, self.out_features, bias=bias is not None,
                            device=w.device, dtype=w.dtype)
            with torch.no_grad():
                out.weight.copy_((w.double() + self.delta_weight(torch.float64)).to(w.dtype))
                if bias is not None:
                    out.bias.copy_(bias)
            return out.requires_grad_(False)
        self.merge(keep_original=False)
        self._original_weight = None
        return self.base.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"


@dataclass
class LoRAReport:
    layers: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    """All weights of the model, NF4 weights counted as their logical (out * in) size."""

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def __str__(self) -> str:
        return (f"LoRA on {len(self.layers)} layers: {self.trainable_params:,} trainable "
                f"parameters of {self.total_params:,} ({100 * self.trainable_share:.3f}%)")


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def adaptable_layer_names(model: nn.Module) -> list[str]:
    """Linear layers (``nn.Linear`` or ``NF4Linear``) not inside an adapter, in order."""
    inside = {f"{n}.base" for n in lora_layers(model)}
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, NF4Linear)) and n not in inside]


def _count(model: nn.Module, trainable_only: bool) -> int:
    n = count_params(model, trainable_only)
    if not trainable_only:
        n += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, NF4Linear))
    return n


def lora_report(model: nn.Module) -> LoRAReport:
    """The adapted layers and the trainable parameters (adapters and modules to save) now."""
    return LoRAReport(list(lora_layers(model)), _count(model, True), _count(model, False))


_report = lora_report

SAVED_MODULES_ATTR = "lmforge_modules_to_save"


def saved_modules(model: nn.Module) -> tuple[str, ...]:
    """The names of the modules trained fully and saved with the adapter (``modules_to_save``)."""
    return tuple(getattr(model, SAVED_MODULES_ATTR, ()) or ())


def _select_modules(model: nn.Module, patterns: Sequence[str], what: str) -> list[str]:
    """The outermost modules whose names match ``patterns`` (each pattern must match one)."""
    names = [n for n, _ in model.named_modules() if n]
    preds = compile_patterns(patterns, what)
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    unmatched = [p for p, pred in zip(pats, preds) if not any(pred(n) for n in names)]
    if unmatched:
        top = sorted(dict.fromkeys(generalise(n) for n in names if n.count(".") < 2))
        raise ConfigError(f"{what}: pattern(s) {', '.join(map(repr, unmatched))} match no module "
                          f"of this model; its top-level modules are {', '.join(top[:40])}")
    chosen = [n for n in names if any(pred(n) for pred in preds)]
    return [n for n in chosen if not any(n.startswith(f"{o}.") for o in chosen if o != n)]


def _mark_saved_modules(model: nn.Module, names: Sequence[str], what: str) -> None:
    """Make the modules ``names`` fully trainable and remember them for save_adapter."""
    loras = lora_layers(model)
    for n in names:
        inside = [l for l in loras if l == n or l.startswith(f"{n}.") or n.startswith(f"{l}.")]
        if inside:
            raise ConfigError(f"{what}: {n!r} overlaps the adapted layer {inside[0]!r}; a module "
                              "is either adapted (targets) or trained fully (modules_to_save)")
    tied = tied_parameter_names(model)
    for n in names:
        for pname, _ in model.get_submodule(n).named_parameters(remove_duplicate=False):
            others = [o for o in tied.get(f"{n}.{pname}", []) if not o.startswith(f"{n}.")]
            if others:
                raise ConfigError(f"{what}: {n}.{pname} is tied to {', '.join(others)}; training "
                                  "it would change both. Leave this module out")
    for n in names:
        model.get_submodule(n).requires_grad_(True)
    setattr(model, SAVED_MODULES_ATTR, tuple(names))


def saved_module_state(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``<module>.<tensor>`` of every module to save (the tensors written next to A and B)."""
    out = {}
    for n in saved_modules(model) if names is None else names:
        for k, v in model.get_submodule(n).state_dict().items():
            out[f"{n}.{k}"] = v.detach().contiguous().cpu()
    return out


def _inject(model: nn.Module, names: Sequence[str], rank: int, alpha: float, dropout: float,
            targets: Sequence[str], where: str = "lora") -> None:
    for name in names:
        base = model.get_submodule(name)
        if rank > min(base.in_features, base.out_features):
            raise ConfigError(
                f"{where}.rank = {rank} is larger than min(in, out) = "
                f"{min(base.in_features, base.out_features)} of {name} ({base.in_features} -> "
                f"{base.out_features}); a rank that large is no longer low-rank: lower {where}.rank")
    model.requires_grad_(False)
    for name in names:
        layer = LoRALinear(model.get_submodule(name), rank, alpha, dropout)
        layer.targets = tuple(targets)  # the patterns that chose it, for save_adapter
        set_submodule(model, name, layer)


def inject_lora(model: nn.Module, cfg: LoRAConfig | None = None, *,
                where: str = "lora") -> LoRAReport:
    """Wrap every linear layer whose name matches ``cfg.targets`` in a :class:`LoRALinear`, in
    place, and freeze every other parameter. Returns what was adapted and the trainable share.

    ConfigError when a pattern matches no layer (the message lists the linear layers), when
    the rank exceeds min(in, out) of a matched layer, when a matched layer's weight is tied to
    another (the output head of a tied-embedding model), or when the model already has LoRA.
    ``cfg.modules_to_save`` names whole modules (a classifier head) that stay trainable and are
    saved with the adapter. ``where`` names the config table in error messages
    (``sft.lora`` -> ``sft.lora.targets: pattern(s) ... match no linear layer``).
    """
    cfg = cfg or LoRAConfig()
    if lora_layers(model):
        raise ConfigError("inject_lora: the model already has LoRA adapters; merge_lora(model) "
                          "them first, or load the base model again")
    names = select(adaptable_layer_names(model), cfg.targets, f"{where}.targets")
    check_not_tied(model, names, f"{where}.targets")
    save = _select_modules(model, cfg.modules_to_save, f"{where}.modules_to_save") \
        if cfg.modules_to_save else []
    clash = [n for n in names if any(n == s or n.startswith(f"{s}.") for s in save)]
    if clash:
        raise ConfigError(f"{where}.modules_to_save: {clash[0]!r} is also matched by "
                          f"{where}.targets; a module is either adapted or trained fully, not both")
    _inject(model, names, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, where)
    _mark_saved_modules(model, save, f"{where}.modules_to_save")
    return _report(model)


def set_lora_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every adapter on or off (off: the model computes the base model's outputs)."""
    for m in lora_layers(model).values():
        m.enabled = enabled


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only: ``<layer>.lora_A`` (r, in) and ``<layer>.lora_B`` (out, r)."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
            if k.endswith((".lora_A", ".lora_B"))}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by a plain ``nn.Linear`` holding base + update (NF4
    bases are dequantised to fp32), in place; returns the model. The result has the base
    model's module names again, so ``save_model_dir`` writes an ordinary model directory."""
    for name, layer in list(lora_layers(model).items()):
        set_submodule(model, name, layer.merged_linear())
    if hasattr(model, SAVED_MODULES_ATTR):
        delattr(model, SAVED_MODULES_ATTR)
    return model


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adapter merged and every other NF4 layer dequantised to
    an fp32 ``nn.Linear``: an ordinary model that ``save_model_dir`` can write (``model``
    itself is not changed)."""
    import copy

    out = merge_lora(copy.deepcopy(model))
    for name, m in list(out.named_modules()):
        if isinstance(m, NF4Linear):
            lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                            device=m.packed.device)
            with torch.no_grad():
                lin.weight.copy_(m.dequantize(torch.float32))
                if m.bias is not None:
                    lin.bias.copy_(m.bias)
            set_submodule(out, name, lin.requires_grad_(False))
    return out


# -- the base-model fingerprint ---------------------------------------------------------------
