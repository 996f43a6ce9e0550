"""Published dense peaks of common accelerators, and an estimate of this CPU's: what a prediction
without a calibration divides the FLOPs by (at a stated fraction, labelled as an assumption)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import UserError


@dataclass(frozen=True)
class Peak:
    """A device's dense peak in TFLOP/s per precision, and where the numbers come from."""

    name: str
    fp32: float
    bf16: float
    source: str

    def tflops(self, precision: str) -> float:
        """The peak of "fp32" or "bf16" work (bf16: the tensor cores' dense rate, no sparsity)."""
        return self.bf16 if precision == "bf16" else self.fp32


# NVIDIA's datasheets, dense (the 2x "with sparsity" figures left out); fp32 is the non-tensor-core rate.
PEAKS: dict[str, Peak] = {
    "A100": Peak("A100", 19.5, 312.0, "NVIDIA A100 datasheet (SXM4)"),
    "H100": Peak("H100", 67.0, 989.0, "NVIDIA H100 datasheet (SXM5)"),
    "H100 PCIe": Peak("H100 PCIe", 51.0, 756.0, "NVIDIA H100 datasheet (PCIe)"),
    "H200": Peak("H200", 67.0, 989.0, "NVIDIA H200 datasheet (SXM)"),
    "L4": Peak("L4", 30.3, 121.0, "NVIDIA L4 datasheet"),
}

# Assumed shares of the peak for a prediction without a calibration: eager PyTorch CNN training (ResNets,
# small batches, BN-statistic hooks, gradients to the inputs) reaches a few tenths of a GPU's peak at best.
ASSUMED_UTILISATION = 0.25
ASSUMED_RANGE = (0.1, 0.5)


def gpu_peak(name: str) -> Peak | None:
    """The table's entry whose name a GPU's name contains ("NVIDIA H100 80GB HBM3" -> H100), the
    longest match first ("H100 PCIe" before "H100"); None for a GPU not in the table."""
    for key in sorted(PEAKS, key=len, reverse=True):
        words = key.split()
        if all(w.lower() in name.lower() for w in words):
            return PEAKS[key]
    return None


def cpu_flops_per_cycle(features: dict[str, object], precision: str) -> int:
    """FLOPs one core issues per cycle: two FMA units of the widest vectors (AVX-512: 16 fp32 lanes,
    AVX2: 8, else 4), x2 for multiply-add; bf16 with AMX tiles 1024, with AVX512-BF16 dot products
    twice the fp32 rate; otherwise bf16 is emulated (the fp32 rate, at best)."""
    if precision == "bf16" and features.get("amx_bf16"):
        return 1024
    lanes = 16 if features.get("avx512f") else 8 if features.get("avx2") else 4
    per_cycle = 2 * 2 * lanes
    return per_cycle * 2 if precision == "bf16" and features.get("avx512_bf16") else per_cycle


def cpu_ghz() -> float:
    """The CPU's clock in GHz: its maximum where the kernel reports one, else the current one (2.0 where
    neither can be read)."""
    try:
        return int(open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000
    except (OSError, ValueError):
        pass
    return 2.0


def cpu_peak(threads: int | None = None) -> Peak:
    """An estimate of this CPU's peak for the threads torch uses: threads x clock x FLOPs per cycle
    (torch's cpuinfo flags), labelled as an estimate."""
    from ..engine.precision import cpu_features

    features = cpu_features()
    threads = threads or torch.get_num_threads()
    ghz = cpu_ghz()
    name = str(features.get("cpu_name") or "CPU")
    rate = {p: threads * ghz * cpu_flops_per_cycle(features, p) / 1000 for p in ("fp32", "bf16")}
    return Peak(f"{name} ({threads} threads)", rate["fp32"], rate["bf16"],
                f"estimate: {threads} threads x {ghz:.2f} GHz x FLOPs/cycle from the CPU's vector units")


def device_peak(device: torch.device) -> Peak:
    """The peak of a local device: this CPU's estimate, or a CUDA GPU's table entry; a GPU not in the
    table gets an A100's, said in its name."""
    if device.type != "cuda":
        return cpu_peak()
    name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "cuda"
    peak = gpu_peak(name)
    return peak or replace(PEAKS["A100"], name=f"{name} (not in the table: an A100's)")


def named_peak(name: str) -> Peak:
    """The peak of a device named as the table names it ("H100"), or "cpu" for this CPU's estimate."""
    if name.lower() == "cpu":
        return cpu_peak()
    peak = gpu_peak(name)
    if peak is None:
        raise UserError(f"no published peak for {name!r}; choose from: {', '.join(PEAKS)}, cpu")
    return peak
