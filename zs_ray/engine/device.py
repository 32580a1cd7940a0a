"""Devices and precision: which device, precision and torch dtype a model runs on, and how many CPU threads.

On CPU, ``auto`` is decided from what torch will actually run, not from the CPU's flags alone: a CPU
whose flags list avx512_bf16 but where torch runs its AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``, an
``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16, a hypervisor hiding AVX-512 state) emulates bf16 at a
tenth of fp32's speed.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from zs_ray.checks import check_precision
from zs_ray.errors import ZsRayError

# What each fast mode is held to against fp32, on the test suite's discriminative tiny models (120 summaries;
# tests/test_engine_cpu.py, tests/test_architectures.py): top-1 agreement where fp32's top-1 margin is >= 0.05
# ("clear"), over all texts ("all"; near-ties flip), and the largest |score difference|. ``auto`` only picks
# modes within these. Measured on ELECTRA: bf16 100% / 88-91% / 0.066; int8 100% / 74% / 0.19 with VNNI, 92% /
# 73% / 0.34 with AVX2 kernels; onnx-int8 98% / 82% / 0.36 with VNNI. On an Intel Xeon with AMX (bf16 GEMMs on
# AMX tiles, rounding that depends on the thread count) bf16 reached 98% clear in the full suite. DeBERTa-v2 adds
# its c2p / p2c position terms to the scores in the model's dtype: transformers' own bf16 pipeline moves a score
# by up to 0.096 on its tiny model, zs-ray's bf16 by 0.15 (agreement 93% / 99% and 92.5% / 99%).
AGREEMENT_BOUNDS = {
    "bf16": {"clear": 0.95, "all": 0.80, "max_diff": 0.2},
    "fp16": {"clear": 0.95, "all": 0.80, "max_diff": 0.2},
    "int8": {"clear": 0.90, "all": 0.65, "max_diff": 0.4},
    "onnx-int8": {"clear": 0.90, "all": 0.65, "max_diff": 0.5},
}

# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that still allow native bf16 GEMMs.
_ONEDNN_BF16_ISAS = {"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}


def cpu_flags() -> set:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_capability() -> str:
    """The vector kernels torch's CPU operators run ("AVX512", "AVX2", "DEFAULT", ...): what the CPU has,
    capped by ``ATEN_CPU_CAPABILITY``."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # noqa: BLE001 - a torch without the query
        return "DEFAULT"


def cpu_runs_native_bf16() -> bool:
    """Whether bf16 GEMMs run natively here: the CPU has AVX512-BF16 or AMX-BF16 *and* torch runs its
    AVX-512 kernels *and* oneDNN is not capped below AVX512_CORE_BF16."""
    if not cpu_capability().startswith("AVX512"):
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if limit and limit.strip().upper() not in _ONEDNN_BF16_ISAS:
        return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_int8_available() -> bool:
    """Whether torch has an x86 int8 GEMM engine here (fbgemm: AVX2 at least; VNNI where present)."""
    import torch

    engines = set(torch.backends.quantized.supported_engines)
    if not (engines & {"x86", "fbgemm"}) or cpu_capability() not in {"AVX2", "AVX512"}:
        return False
    try:  # torch 2.13 marks its quantized tensors deprecated: a torch without fbgemm's ops has no int8 mode
        return callable(torch.ops.quantized.linear_dynamic) and callable(torch.ops.quantized.linear_prepack)
    except (AttributeError, RuntimeError):
        return False


def cpu_int8_vnni() -> bool:
    """Whether fbgemm's int8 GEMMs run with AVX512-VNNI: its u8 x s8 products then accumulate in int32
    without the int16 saturation of the AVX2 kernels, so activations can use all 8 bits."""
    forced = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").strip().upper()
    if forced and not forced.startswith("AVX512_E1"):
        return False
    return "avx512_vnni" in cpu_flags()


def onnx_int8_vnni() -> bool:
    """Whether ONNX Runtime's int8 GEMMs get VNNI here (it picks its kernels from cpuid; no cap)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def cpu_candidates() -> list:
    """The CPU modes ``auto`` measures here (``calibrate``), most faithful first: fp32; bf16 where it runs
    natively (emulated bf16 is ~10x slower than fp32); torch int8 where torch has an x86 int8 engine; ONNX
    Runtime int8 on x86 with AVX2 (where the install has ONNX Runtime, a dependency of zs-ray)."""
    from zs_ray.engine.onnx import onnx_available

    out = ["fp32"]
    if cpu_runs_native_bf16():
        out.append("bf16")
    if cpu_int8_available():
        out.append("int8")
    if onnx_available() and "avx2" in cpu_flags():
        out.append("onnx-int8")
    return out


def resolve_device(device: Optional[str] = None) -> str:
    import torch

    if device:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """The precision a model runs in ("fp32", "bf16", "fp16", "int8", "onnx-int8"). ``auto``: bf16 on GPUs
    that support it (else fp16). On CPUs a loaded model measures its candidates (``calibrate``, through
    ``NliScorer``); without a model this gives the expected winner: bf16 where it runs natively (see
    ``cpu_runs_native_bf16``), else int8 where torch has an int8 engine (AVX2 and up), else fp32. ``int8``
    (dynamic quantization of the encoder's linears) and ``onnx-int8`` are CPU modes."""
    import torch

    check_precision(precision)
    cuda = device.startswith("cuda")
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device == "cpu" and cpu_runs_native_bf16():
            return "bf16"
        if device == "cpu" and cpu_int8_available():
            return "int8"
        return "fp32"
    if precision == "onnx-int8":
        from zs_ray.engine.onnx import require_onnx

        if device != "cpu":
            raise ZsRayError(f"--precision onnx-int8 runs on CPUs only, not on device {device!r}: choose auto")
        require_onnx()
        return precision
    if precision == "int8" and (device != "cpu" or not cpu_int8_available()):
        where = f"device {device!r}" if device != "cpu" else f"this CPU (torch kernels: {cpu_capability()})"
        raise ZsRayError(f"--precision int8 runs on x86 CPUs with AVX2 or better only, not on {where}: "
                         "choose fp32, bf16, fp16 or auto")
    return precision


def resolve_dtype(precision: str, device: str):
    """The torch dtype of the model's weights and activations for a precision name (int8: fp32
    activations, int8 GEMMs inside the quantized linears)."""
    import torch

    name = resolve_precision(precision, device)
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32,
            "onnx-int8": torch.float32}[name]


def precision_name(dtype) -> str:
    """The precision name ("fp32", "bf16", "fp16") of a torch dtype."""
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def torch_threads_for(cpus: float) -> int:
    """Intra-op threads for a CPU model worker holding ``cpus`` Ray CPUs (a fractional share rounds up:
    the read, tokenize and write stages take the rest only now and then)."""
    return max(1, min(os.cpu_count() or 1, math.ceil(cpus)))
