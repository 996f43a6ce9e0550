"""One student-style train step (forward + backward, batch 128, 32 px) of the digits models in fp32 and under
bf16 autocast, contiguous and channels_last: whether this CPU computes bf16 natively or emulates it.

    .venv/bin/python benchmarks/bf16_step.py [THREADS]
"""

from __future__ import annotations

import sys
import time

import torch

from dfkd_bench.models import create_model

MODES = ("fp32", "fp32 channels_last", "bf16", "bf16 channels_last")


def step_ms(model: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int = 5) -> float:
    """Mean milliseconds of one forward + backward after two warm-up steps."""
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().sum().backward()
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def main(threads: int) -> None:
    torch.set_num_threads(threads)
    print(f"cpu: {torch.cpu.get_capabilities().get('cpu_name', '?')}, {threads} thread(s), torch {torch.__version__}")
    for arch in ("digits_resnet8_slim", "digits_resnet8"):
        model, x = create_model(arch, 10, 3), torch.randn(128, 3, 32, 32)
        for mode in MODES:
            layout = torch.channels_last if "channels_last" in mode else torch.contiguous_format
            ms = step_ms(model.to(memory_format=layout), x.contiguous(memory_format=layout), mode.startswith("bf16"))
            print(f"{arch:22s} {mode:20s} {ms:8.1f} ms/step", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
