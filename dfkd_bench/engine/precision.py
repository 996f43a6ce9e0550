"""The forwards' precision: bf16 autocast (with channels_last) where the hardware computes bf16 natively.

`--amp auto` picks bf16 on CUDA devices with bf16 tensor cores (compute capability 8.0 or later, or
ROCm) and on CPUs that torch reports with AMX-BF16 or AVX512-BF16 (and oneDNN to use them), fp32
elsewhere; a method whose bf16 accuracy was not on par with fp32 declares `amp_auto = False` and stays
fp32 under auto. `bf16` forces bf16 (on a CPU without those units torch emulates it, several times
slower); `off` is fp32. The losses are computed in fp32 either way (logits are cast before them).
"""

from __future__ import annotations

import platform

import torch

from ..errors import UserError

AMP_MODES = ("auto", "bf16", "off")
BF16_CPU_FEATURES = ("amx_bf16", "avx512_bf16")  # torch.cpu.get_capabilities() keys of native bf16 units


def cpu_features() -> dict[str, object]:
    """torch's own CPU capability query (cpuinfo): feature flags and `cpu_name`; empty on a torch without it."""
    query = getattr(torch.cpu, "get_capabilities", None)
    return dict(query()) if query is not None else {}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 matrix units (AMX-BF16 or AVX512-BF16) that oneDNN can use."""
    if not torch.backends.mkldnn.is_available():
        return False
    features = cpu_features()
    if features:
        return any(bool(features.get(name)) for name in BF16_CPU_FEATURES)
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe() for probe in probes if probe is not None)


def cuda_computes_bf16(device: torch.device) -> bool:
    """Whether a CUDA device has bf16 tensor cores (capability 8.0+, or ROCm). Where no GPU can be queried
    (a login node naming the runs of GPU tasks) the answer is the CUDA reference, bf16."""
    if torch.version.hip is not None or not torch.cuda.is_available():
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def computes_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (CUDA or CPU, see above); other device types do not."""
    if device.type == "cuda":
        return cuda_computes_bf16(device)
    return device.type == "cpu" and cpu_computes_bf16()


def amp_dtype_for(amp: str, device: torch.device, amp_auto: bool = True) -> torch.dtype | None:
    """The forwards' autocast dtype: bf16 for "bf16", and for "auto" where `device` computes bf16 natively
    and the method allows it (`amp_auto`, a method's class attribute); None (fp32) otherwise."""
    if amp not in AMP_MODES:
        raise UserError(f"unknown --amp {amp!r}; choose from: {', '.join(AMP_MODES)}")
    if amp == "auto":
        return torch.bfloat16 if amp_auto and computes_bf16(torch.device(device)) else None
    return torch.bfloat16 if amp == "bf16" else None


def precision_name(dtype: torch.dtype | None) -> str:
    """What a row's `amp` column records: "bf16" under bf16 autocast, else "fp32"."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def device_name(device: torch.device) -> str:
    """The device's model name for a row: the GPU's name on CUDA, the CPU's (torch's cpuinfo, else the
    platform's) on the CPU; the device type where neither says."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return str(cpu_features().get("cpu_name") or platform.processor() or "cpu")
    return device.type
