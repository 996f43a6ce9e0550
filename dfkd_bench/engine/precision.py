"""The forwards' precision: bf16 autocast (with channels_last) where the hardware computes bf16 natively.

`--amp auto` picks bf16 on CUDA devices with bf16 tensor cores (compute capability 8.0 or later, or
ROCm) and on CPUs that torch reports with AMX-BF16 or AVX512-BF16 (and oneDNN to use them), fp32
elsewhere. `bf16` forces bf16 (on a CPU without those units torch emulates it, several times slower);
`off` is fp32. The two phases can differ: `--amp synth=off,kd=bf16` (a phase left out is auto), and a
method whose accuracy in one phase was not on par in bf16 declares the phases auto may use
(`Method.auto_bf16_phases`; DeepInversion: KD only). The losses are computed in fp32 either way.
"""

from __future__ import annotations

import platform

import torch

from ..errors import UserError

AMP_MODES = ("auto", "bf16", "off")
PHASES = ("synth", "kd")  # synthesis (the generator's or the pixels' steps) and the student's KD steps
BF16_CPU_FEATURES = ("amx_bf16", "avx512_bf16")  # torch.cpu.get_capabilities() keys of native bf16 units
PhaseDtypes = dict[str, "torch.dtype | None"]


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


def parse_amp(amp: str) -> dict[str, str]:
    """`--amp` as a mode per phase: one of AMP_MODES for both phases, or `synth=MODE,kd=MODE` (a phase left
    out is auto); a one-line UserError naming the choices otherwise."""
    text = str(amp).strip()
    if text in AMP_MODES:
        return dict.fromkeys(PHASES, text)
    modes = dict.fromkeys(PHASES, "auto")
    for part in text.split(","):
        phase, _, mode = (p.strip() for p in part.partition("="))
        if phase not in PHASES or mode not in AMP_MODES:
            raise UserError(f"unknown --amp {amp!r}; choose from: {', '.join(AMP_MODES)}, or per phase "
                            f"synth=MODE,kd=MODE with MODE one of them (e.g. synth=off,kd=bf16)")
        modes[phase] = mode
    return modes


def phase_dtypes(amp: str, device: torch.device, auto_phases: tuple[str, ...] = PHASES) -> PhaseDtypes:
    """Each phase's autocast dtype: bf16 where its mode is "bf16", or "auto" on a device that computes bf16
    natively in a phase the method lets auto use (`auto_phases`); None (fp32) otherwise."""
    native = None
    dtypes: PhaseDtypes = {}
    for phase, mode in parse_amp(amp).items():
        if mode == "auto" and phase in auto_phases:
            native = computes_bf16(torch.device(device)) if native is None else native
        dtypes[phase] = torch.bfloat16 if mode == "bf16" or (mode == "auto" and phase in auto_phases and native) \
            else None
    return dtypes


def amp_dtype_for(amp: str, device: torch.device, auto_phases: tuple[str, ...] = PHASES) -> torch.dtype | None:
    """The forwards' autocast dtype when both phases share one (bf16 or None for fp32); with phases apart, bf16
    (some forwards run in it: name the run with `precision_label`/`precision_id`, which tell the phases)."""
    dtypes = phase_dtypes(amp, device, auto_phases).values()
    return torch.bfloat16 if torch.bfloat16 in dtypes else None


def precision_name(dtype: torch.dtype | None) -> str:
    """One phase's precision as a row names it: "bf16" under bf16 autocast, else "fp32"."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def _label(dtypes: PhaseDtypes, names: tuple[str, str]) -> str:
    """`names[0]`/`names[1]` (bf16/fp32 words) when the phases agree, else `synth=…,kd=…`."""
    words = {phase: names[0] if dtype == torch.bfloat16 else names[1] for phase, dtype in dtypes.items()}
    if len(set(words.values())) == 1:
        return next(iter(words.values()))
    return ",".join(f"{phase}={word}" for phase, word in words.items())


def precision_label(amp: str, device: torch.device, auto_phases: tuple[str, ...] = PHASES) -> str:
    """What a run's row and plan record as its precision: "bf16", "fp32", or per phase "synth=fp32,kd=bf16"."""
    return _label(phase_dtypes(amp, device, auto_phases), ("bf16", "fp32"))


def precision_id(amp: str, device: torch.device, auto_phases: tuple[str, ...] = PHASES) -> str | None:
    """The run id's `amp` entry: None at the device type's reference precision in every phase (CUDA: bf16,
    CPU: fp32), so those runs keep their ids; else "bf16", "off" or per phase "synth=off,kd=bf16"."""
    device = torch.device(device)
    dtypes = phase_dtypes(amp, device, auto_phases)
    reference = torch.bfloat16 if device.type == "cuda" else None
    if all(dtype == reference for dtype in dtypes.values()):
        return None
    return _label(dtypes, ("bf16", "off"))


def device_name(device: torch.device) -> str:
    """The device's model name for a row: the GPU's name on CUDA, the CPU's (torch's cpuinfo, else the
    platform's) on the CPU; the device type where neither says."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return str(cpu_features().get("cpu_name") or platform.processor() or "cpu")
    return device.type
