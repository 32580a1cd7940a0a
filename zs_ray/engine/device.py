"""Devices and precision: which device and torch dtype a model runs on, and how many CPU threads."""

from __future__ import annotations

import math
import os
from typing import Optional

from zs_ray.checks import check_precision


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: Optional[str] = None) -> str:
    import torch

    if device:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(precision: str, device: str):
    """torch dtype for a precision name. ``auto`` picks the fastest precision the
    hardware runs well: bf16 on GPUs that support it (else fp16), bf16 on CPUs
    with native bf16 instructions (AVX512-BF16 / AMX), else fp32."""
    import torch

    check_precision(precision)
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device == "cpu" and _cpu_has_native_bf16():
            precision = "bf16"
        else:
            precision = "fp32"
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(dtype) -> str:
    """The precision name ("fp32", "bf16", "fp16") of a torch dtype."""
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def torch_threads_for(cpus: float) -> int:
    """Intra-op threads for a CPU model worker holding ``cpus`` Ray CPUs (a fractional share rounds up:
    the read, tokenize and write stages take the rest only now and then)."""
    return max(1, min(os.cpu_count() or 1, math.ceil(cpus)))
