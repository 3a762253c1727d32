"""The autocast precision a run trains in (``train.dtype``): weights and optimiser state stay
fp32; ``auto`` picks bf16 where the hardware multiplies it natively."""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 autocast on GPUs and CPUs with hardware bf16 (weights and optimiser
    state stay fp32), fp16 on older GPUs, fp32 elsewhere."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
