"""LoRA adapters in Hugging Face PEFT's format, both ways: an lmforge adapter directory
(:mod:`lmforge.finetune.adapter`) as ``adapter_config.json`` + ``adapter_model.safetensors``
that ``peft.PeftModel.from_pretrained`` loads onto the ``transformers`` model that
``lmforge export --format hf`` writes, and a PEFT LoRA adapter as an lmforge adapter
directory for the imported base model.

The layer names follow the HF export of :mod:`lmforge.interop.hf` (Llama/Mistral/Qwen2 and
GPT-2 decoders, task ``CAUSAL_LM``):

    backbone.layers.{i}.attn.q_proj  <->  model.layers.{i}.self_attn.q_proj   (llama)
    backbone.layers.{i}.ff.gate_proj <->  model.layers.{i}.mlp.gate_proj      (llama)
    backbone.layers.{i}.attn.{q,k,v}_proj <-> transformer.h.{i}.attn.c_attn   (gpt2, fused)

PEFT keys are ``base_model.model.<HF module>.lora_A.weight`` (r, in) and ``.lora_B.weight``
(out, r), the same orientation as lmforge's ``lora_A`` / ``lora_B`` (also for GPT-2's
``Conv1D``: PEFT's adapter on it is an ordinary Linear pair). GPT-2's fused ``c_attn`` holds
q, k and v: lmforge's separate adapters export as one of rank ``n * r`` (A stacked, B block
diagonal; ``rank_pattern`` / ``alpha_pattern`` keep alpha / r), and a PEFT ``c_attn`` adapter
imports as three adapters sharing A, each with its rows of B. Every conversion is exact:
the same update ``scaling * B @ A`` per layer.

One lmforge adapter has one rank and alpha; a PEFT adapter with per-module ranks or alphas
(``rank_pattern``, ``alpha_pattern``) imports at the largest rank, the smaller ones padded
with zeros and each B rescaled so that every layer's update is unchanged. Features lmforge
has no equivalent for are refused, naming the field: DoRA, rsLoRA, ``modules_to_save``,
trained biases, other PEFT types, and modules the HF naming cannot map.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import CheckpointError, ConfigError
from ..files.atomic import atomic_write, atomic_write_text
from ..files.safetensors import save_safetensors
from ..interop.hf import family_for_config
from ..modeldir import load_model_dir, read_config, read_meta
from .adapter import read_adapter_config, save_adapter
from .lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, _inject, lora_layers

PEFT_PREFIX = "base_model.model."
"""What PEFT puts before the HF module name in its saved keys."""
TASK_TYPE = "CAUSAL_LM"
QKV = ("q_proj", "k_proj", "v_proj")
_LLAMA = {"attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj",
          "attn.v_proj": "self_attn.v_proj", "attn.o_proj": "self_attn.o_proj",
          "ff.gate_proj": "mlp.gate_proj", "ff.up_proj": "mlp.up_proj",
          "ff.down_proj": "mlp.down_proj"}
_GPT2 = {"attn.o_proj": "attn.c_proj", "ff.up_proj": "mlp.c_fc", "ff.down_proj": "mlp.c_proj"}
_LAYER_PREFIX = {"llama": ("backbone.layers.{i}.", "model.layers.{i}."),
                 "gpt2": ("backbone.layers.{i}.", "transformer.h.{i}.")}
_REFUSED = (("use_dora", "DoRA"), ("use_rslora", "rsLoRA (alpha / sqrt(r) scaling)"),
            ("lora_bias", "trained LoRA biases"), ("use_qalora", "QA-LoRA"))


def _family(base_dir: str | Path) -> tuple[str, int]:
    """(HF family name, number of layers) of the base model directory."""
    cfg = read_config(base_dir)
    source = read_meta(base_dir).imported_source()
    family = family_for_config(cfg, prefer=source.family if source else None).name
    if family not in _LAYER_PREFIX:
        raise ConfigError(f"{base_dir}: PEFT adapters are supported for llama and gpt2 family "
                          f"decoders, not {family}")
    return family, cfg.n_layer


def module_map(family: str, n_layer: int) -> dict[str, str]:
    """lmforge linear layer -> HF module name, for every layer PEFT can adapt. GPT-2's q, k
    and v all map to the fused ``c_attn``."""
    ours, theirs = _LAYER_PREFIX[family]
    table = dict(_LLAMA) if family == "llama" else \
        _GPT2 | {f"attn.{p}": "attn.c_attn" for p in QKV}
    out = {"lm_head": "lm_head"}
    for i in range(n_layer):
        out |= {ours.format(i=i) + a: theirs.format(i=i) + b for a, b in table.items()}
    return out


# -- lmforge -> PEFT ----------------------------------------------------------------------------

def _fuse_qkv(parts: dict[str, tuple[torch.Tensor, torch.Tensor]], d_out: int,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One adapter on the fused (q; k; v) projection from separate ones: A (n r, in) stacked,
    B (3 d_out, n r) block diagonal (zero rows for a projection without an adapter)."""
    present = [p for p in QKV if p in parts]
    a = torch.cat([parts[p][0] for p in present])  # (n r, in)
    r = parts[present[0]][0].shape[0]
    b = a.new_zeros(3 * d_out, len(present) * r)  # (3 C, n r)
    for j, p in enumerate(present):
        row = QKV.index(p) * d_out
        b[row: row + d_out, j * r: (j + 1) * r] = parts[p][1]
    return a, b


def _short_targets(chosen: set[str], every: set[str]) -> list[str]:
    """``target_modules``: the last name parts ("q_proj") when they pick exactly ``chosen``
    among all adaptable modules, else the full module names."""
    short = {m.rsplit(".", 1)[-1] for m in chosen}
    if {m for m in every if m.rsplit(".", 1)[-1] in short} == chosen:
        return sorted(short)
    return sorted(chosen)


def peft_tensors(config: dict, tensors: dict[str, torch.Tensor], family: str, n_layer: int,
                 ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """PEFT's tensors from lmforge's, and the HF modules whose rank is not ``config["rank"]``
    (fused q/k/v) with their rank."""
    names = module_map(family, n_layer)
    out, fused, ranks = {}, {}, {}
    for layer in config["layers"]:
        if layer not in names:
            raise ConfigError(f"adapter layer {layer!r} has no Hugging Face {family} module to "
                              "map to; PEFT export supports the attention/feed-forward "
                              "projections and lm_head")
        a, b = tensors[f"{layer}.lora_A"], tensors[f"{layer}.lora_B"]  # (r, in), (out, r)
        hf = names[layer]
        if family == "gpt2" and hf.endswith(".c_attn"):
            fused.setdefault(hf, {})[layer.rsplit(".", 1)[-1]] = (a, b)
            continue
        out[f"{PEFT_PREFIX}{hf}.lora_A.weight"] = a.contiguous()
        out[f"{PEFT_PREFIX}{hf}.lora_B.weight"] = b.contiguous()
    for hf, parts in fused.items():
        a, b = _fuse_qkv(parts, next(iter(parts.values()))[1].shape[0])
        out[f"{PEFT_PREFIX}{hf}.lora_A.weight"], out[f"{PEFT_PREFIX}{hf}.lora_B.weight"] = a, b
        if a.shape[0] != int(config["rank"]):
            ranks[hf] = a.shape[0]
    return out, ranks


def _patterns(ranks: dict[str, int], rank: int, alpha: float) -> tuple[dict, dict]:
    """rank_pattern / alpha_pattern for the modules of another rank (alpha scaled with it,
    so alpha / r stays): one short key when all such modules agree, else exact names."""
    if not ranks:
        return {}, {}
    values = set(ranks.values())
    keys = {m.rsplit(".", 1)[-1] for m in ranks}
    if len(values) == 1 and len(keys) == 1:
        items = {keys.pop(): values.pop()}
    else:
        items = {re.escape(m): r for m, r in ranks.items()}
    return items, {k: alpha * r / rank for k, r in items.items()}


def export_peft(adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path,
                base_model_name_or_path: str | None = None) -> Path:
    """Write the lmforge adapter ``adapter_dir`` (trained on the model directory
    ``base_dir``) as a PEFT LoRA adapter in ``out_dir`` (which must exist)."""
    config = read_adapter_config(adapter_dir)
    if config.get("modules_to_save"):
        raise ConfigError(f"{adapter_dir}: modules_to_save {config['modules_to_save'][:3]} "
                          "cannot be exported as PEFT (their names differ in transformers); "
                          "export an adapter without them")
    try:
        tensors = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{adapter_dir}/{ADAPTER_WEIGHTS} is corrupt or missing ({e})") \
            from None
    family, n_layer = _family(base_dir)
    out, ranks = peft_tensors(config, tensors, family, n_layer)
    rank, alpha = int(config["rank"]), float(config["alpha"])
    rank_pattern, alpha_pattern = _patterns(ranks, rank, alpha)
    chosen = {k[len(PEFT_PREFIX): -len(".lora_A.weight")] for k in out if ".lora_A." in k}
    peft_config = {
        "peft_type": "LORA", "task_type": TASK_TYPE, "r": rank, "lora_alpha": alpha,
        "lora_dropout": float(config.get("dropout", 0.0)),
        "target_modules": _short_targets(chosen, set(module_map(family, n_layer).values())),
        "bias": "none", "fan_in_fan_out": family == "gpt2", "use_rslora": False,
        "use_dora": False, "modules_to_save": None, "init_lora_weights": True,
        "inference_mode": True, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "base_model_name_or_path": base_model_name_or_path or str(base_dir),
        "revision": None}
    out_dir = Path(out_dir)
    atomic_write(out_dir / ADAPTER_WEIGHTS, lambda p: save_safetensors(out, p))
    atomic_write_text(out_dir / ADAPTER_CONFIG, json.dumps(peft_config, indent=2) + "\n")
    return out_dir


# -- PEFT -> lmforge ----------------------------------------------------------------------------

def read_peft_config(peft_dir: str | Path) -> dict:
    """``adapter_config.json`` of a PEFT LoRA adapter, refusing what lmforge cannot load."""
    f = Path(peft_dir) / ADAPTER_CONFIG
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: cannot read a PEFT adapter config ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        got = cfg.get("peft_type") if isinstance(cfg, dict) else None
        raise ConfigError(f"{f}: peft_type is {got!r}; only LoRA adapters (peft_type LORA) "
                          "can be imported")
    for key, what in _REFUSED:
        if cfg.get(key):
            raise ConfigError(f"{f}: {key} = {cfg[key]!r} ({what}) is not supported by lmforge "
                              "adapters; train the adapter without it")
    if cfg.get("modules_to_save"):
        raise ConfigError(f"{f}: modules_to_save = {cfg['modules_to_save']!r} is not supported "
                          "for PEFT import; use an adapter without fully trained modules")
    if cfg.get("bias", "none") != "none":
        raise ConfigError(f"{f}: bias = {cfg['bias']!r} is not supported; only bias = \"none\" "
                          "adapters can be imported")
    if cfg.get("task_type") not in (None, TASK_TYPE):
        raise ConfigError(f"{f}: task_type = {cfg['task_type']!r} is not supported; only "
                          f"{TASK_TYPE} adapters can be imported")
    return cfg


def _scaling(cfg: dict, module: str, rank: int) -> float:
    """PEFT's alpha / r for ``module`` (``alpha_pattern`` as PEFT matches it)."""
    alpha = float(cfg.get("lora_alpha", 8))
    for key, value in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            alpha = float(value)
            break
    return alpha / rank


def _peft_modules(tensors: dict[str, torch.Tensor], where: str) -> dict[str, tuple]:
    """HF module -> (A, B) from PEFT's keys."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        if m is None:
            raise ConfigError(f"{where}: tensor {key!r} is not a LoRA A/B weight lmforge can "
                              "import (embedding adapters, DoRA magnitudes, saved embedding "
                              "layers and trained modules are not supported; save the adapter "
                              "with save_embedding_layers=False)")
        pairs.setdefault(m.group(1), {})[m.group(2)] = t
    broken = [k for k, v in pairs.items() if set(v) != {"A", "B"}]
    if broken:
        raise CheckpointError(f"{where}: module(s) {broken[:3]} lack lora_A or lora_B")
    return {k: (v["A"], v["B"]) for k, v in pairs.items()}


def lmforge_tensors(cfg: dict, tensors: dict[str, torch.Tensor], family: str, n_layer: int,
                    where: str) -> tuple[dict[str, tuple], int, float]:
    """lmforge layer -> (A, B) at one rank R and scaling, and (R, alpha): each PEFT module's
    update ``s_m B_m A_m`` becomes ``S B' A'`` with A', B' zero-padded to rank R and
    B' = B_m s_m / S (S = lora_alpha / r, PEFT's default scaling)."""
    inverse: dict[str, list[str]] = {}
    for ours, hf in module_map(family, n_layer).items():
        inverse.setdefault(hf, []).append(ours)
    modules = _peft_modules(tensors, where)
    unknown = sorted(set(modules) - set(inverse))
    if unknown:
        raise ConfigError(f"{where}: target module(s) {unknown[:3]} cannot be mapped to lmforge "
                          f"{family} layers (supported: attention and feed-forward projections, "
                          "lm_head)")
    r_max = max(a.shape[0] for a, _ in modules.values())
    base_scale = float(cfg.get("lora_alpha", 8)) / int(cfg.get("r", 8))
    out = {}
    for hf, (a, b) in modules.items():  # a: (r, in), b: (out_total, r)
        r, scale = a.shape[0], _scaling(cfg, hf, a.shape[0]) / base_scale
        a_pad = torch.cat([a, a.new_zeros(r_max - r, a.shape[1])])  # (R, in)
        b_pad = torch.cat([b * scale, b.new_zeros(b.shape[0], r_max - r)], dim=1)  # (out, R)
        ours = inverse[hf]
        if len(ours) == 3:  # GPT-2 c_attn: rows q, k, v of B
            for layer, rows in zip(ours, b_pad.chunk(3)):
                out[layer] = (a_pad, rows.contiguous())
        else:
            out[ours[0]] = (a_pad, b_pad)
    return out, r_max, base_scale * r_max


def import_peft(peft_dir: str | Path, base_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the PEFT LoRA adapter ``peft_dir`` (trained on the HF model that ``base_dir`` was
    imported from) as an lmforge adapter directory ``out_dir`` for the base ``base_dir``."""
    cfg = read_peft_config(peft_dir)
    f = Path(peft_dir) / ADAPTER_WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{f} is missing (PEFT's older adapter_model.bin is pickle and is "
                              "not read: re-save the adapter with safe_serialization)")
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e})") from None
    family, n_layer = _family(base_dir)
    layers, rank, alpha = lmforge_tensors(cfg, tensors, family, n_layer, str(f))
    lm = load_model_dir(base_dir, device="cpu")
    names = [n for n in module_map(family, n_layer) if n in layers]  # model order
    _inject(lm.model, names, rank, alpha, float(cfg.get("lora_dropout", 0.0)), names)
    with torch.no_grad():
        for name, layer in lora_layers(lm.model).items():
            a, b = layers[name]
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
    return save_adapter(lm.model, out_dir, meta={"peft": {
        "source": str(peft_dir), "base_model_name_or_path": cfg.get("base_model_name_or_path"),
        "r": cfg.get("r"), "lora_alpha": cfg.get("lora_alpha"),
        "target_modules": cfg.get("target_modules")}})


__all__ = ["PEFT_PREFIX", "export_peft", "import_peft", "lmforge_tensors", "module_map",
           "peft_tensors", "read_peft_config"]
