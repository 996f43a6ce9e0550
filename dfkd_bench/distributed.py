"""One run data-parallel over a torch.distributed process group (torchrun, or `dfkd-bench run --nproc N`).

Every rank synthesises its share of each round with its own RNG stream; the new images are
all-gathered so every rank banks (and samples) the whole bank; the gradients of every shared module
(`Method.shared_modules`) are averaged so its update is the same everywhere, and what is re-drawn
from an RNG is broadcast from rank 0; the student trains under DistributedDataParallel; evaluation is
sharded and its counts summed; only rank 0 writes. After each round `align_shared_modules` averages
the statistics each rank moved on its own batches and checks, with one all-reduce of a checksum, that
every shared module is bit-identical on every rank. With one process (`Group()`) every collective is
a no-op, so the single-process engine runs the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

RANK_SEED_STRIDE = 1_000_003  # rank r's RNG stream is seeded with seed + r * stride


@dataclass(frozen=True)
class Group:
    """This process's place in the run's process group (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes outputs and checkpoints."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's RNG seed for a run seeded `seed` (rank 0 keeps the run's own seed)."""
        return seed + self.rank * RANK_SEED_STRIDE

    def shares(self, n: int) -> list[int]:
        """How many of `n` items each rank makes: an even split, the first ranks taking the remainder."""
        return [n // self.world_size + (1 if r < n % self.world_size else 0) for r in range(self.world_size)]

    def share(self, n: int) -> int:
        """This rank's part of `n` items (see `shares`)."""
        return self.shares(n)[self.rank]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_gather_rows(self, tensor: torch.Tensor, total: int) -> torch.Tensor:
        """Every rank's rows of an even split of `total` (this rank holds `share(total)` of them),
        concatenated in rank order; the sizes are known from `total`, so nothing is read first."""
        if not self.active:
            return tensor
        counts = self.shares(total)
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
        padded[:tensor.shape[0]] = tensor
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        return torch.cat([g[:c] for g, c in zip(gathered, counts)])

    def average_(self, tensors: Sequence[torch.Tensor | None]) -> None:
        """Average floating-point tensors in place across ranks (gradients kept identical everywhere), all
        of them in one collective on a flat buffer (one per device and dtype); None entries are skipped."""
        if not self.active:
            return

        def mean(flat: torch.Tensor) -> None:
            dist.all_reduce(flat)
            flat.div_(self.world_size)

        _flat_(tensors, mean)

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite tensors in place with rank 0's (what a rank re-drew from its own RNG), in one collective."""
        if self.active:
            _flat_(tensors, lambda flat: dist.broadcast(flat, src=0))

    def broadcast_module_(self, module: nn.Module) -> None:
        """Rank 0's parameters and persistent buffers (its state_dict) copied into `module` on every rank."""
        self.broadcast_(list(module.state_dict().values()))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor in place across ranks; returns it."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def all_true(self, flag: torch.Tensor) -> torch.Tensor:
        """True on every rank only when `flag` is true on every rank (so all ranks decide alike)."""
        if not self.active:
            return flag
        value = flag.to(torch.int32).reshape(1)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return value[0].bool()

    def any_true(self, flag: bool) -> bool:
        """A host decision made alike on every rank: true when any rank's `flag` is."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def main_value(self, value: int) -> int:
        """A host decision made alike on every rank: rank 0's `value` (one from per-rank measurements)."""
        if not self.active:
            return value
        shared = torch.tensor([value], dtype=torch.int64, device=_collective_device())
        dist.broadcast(shared, src=0)
        return int(shared.item())

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj` on every rank (pickled), in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (and fills caches: teacher, test split), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


SINGLE = Group()


def _flat_(tensors: Sequence[torch.Tensor | None], collective: Callable[[torch.Tensor], None]) -> None:
    """Run `collective` in place on one flat copy of the tensors per (device, dtype), then copy back."""
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        if t is not None and t.numel():
            buckets.setdefault((t.device, t.dtype), []).append(t)
    for bucket in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view(t.shape))
            offset += t.numel()


class RankMismatch(RuntimeError):
    """A module meant to be shared differs between the ranks of a process group."""


class RunningStatistics(nn.Module):
    """Tensors each rank moves on its own batches (e.g. BN-loss momentum buffers), held as buffers so a
    method can declare them in `Method.shared_modules`: `align_shared_modules` averages them, then checks them."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_buffer(str(i), t)


def running_statistics(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The statistics in `modules` that each rank updates from its own batches: the running mean and
    variance of every BatchNorm layer, and every buffer of a `RunningStatistics`."""
    found: list[torch.Tensor] = []
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                found += [m.running_mean, m.running_var]
            elif isinstance(m, RunningStatistics):
                found += list(m.buffers())
    return found


FINGERPRINT_CHUNK = 1 << 22  # bytes hashed per kernel (bounds the int64 scratch to 32 MiB)
FINGERPRINT_PRIME = 65521    # byte positions are weighted 1..65521, so swapped bytes change the hash


def fingerprint(module: nn.Module, device: torch.device) -> torch.Tensor:
    """(3,) int64 on `device`: the byte count, the byte sum and a position-weighted byte sum of the
    module's state_dict (parameters and persistent buffers) in order; exact integer arithmetic, so any
    changed byte changes it and equal modules give equal fingerprints on every rank."""
    total = torch.zeros(3, dtype=torch.int64, device=device)
    offset = 0
    for t in module.state_dict().values():
        data = t.detach().contiguous().reshape(-1).view(torch.uint8)
        for start in range(0, data.numel(), FINGERPRINT_CHUNK):
            part = data[start:start + FINGERPRINT_CHUNK].to(torch.int64)
            weight = torch.arange(offset + start, offset + start + part.numel(), device=part.device)
            weight = weight % FINGERPRINT_PRIME + 1
            total[1:] += torch.stack([part.sum(), (part * weight).sum()]).to(device)
        offset += data.numel()
    total[0] = offset
    return total


def align_shared_modules(group: Group, modules: Mapping[str, nn.Module], after: str) -> None:
    """At a round's end (`after`: "round 3", "the final KD"): average the `running_statistics` of the
    shared modules over the ranks (each rank moved them on its own batches), then check with one
    all-reduce (MAX and MIN of each module's `fingerprint`) that every module is bit-identical on every
    rank; a difference raises RankMismatch naming the modules and `after`, alike on every rank. A no-op
    in one process."""
    if not group.active:
        return
    group.average_(running_statistics(list(modules.values())))
    if not modules:
        return
    device = _collective_device()
    prints = torch.stack([fingerprint(m, device) for m in modules.values()])
    extremes = torch.cat([prints, -prints])
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    highest, lowest = extremes[:len(prints)], -extremes[len(prints):]
    differ = [name for name, same in zip(modules, (highest == lowest).all(dim=1).tolist()) if not same]
    if differ:
        raise RankMismatch(f"after {after} these shared modules differ between the {group.world_size} ranks: "
                           f"{', '.join(differ)} (an update or a re-draw was not the same on every rank)")


def _collective_device() -> torch.device:
    """Where a host value must be to take part in a collective: the GPU under nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def environment_world_size() -> int:
    """The group size torchrun gave this process (WORLD_SIZE; 1 outside torchrun): read here, at the
    boundary, and passed on as an argument."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    """True inside a process torchrun started for a group of more than one."""
    return environment_world_size() > 1


def init_from_env(device_type: str) -> Group:
    """Join the group torchrun described in the environment (nccl on CUDA, gloo on the CPU); one
    process outside torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())


def current_rank_is_main() -> bool:
    """Whether this process is rank 0 (torchrun's RANK; true outside torchrun), before joining the group."""
    return int(os.environ.get("RANK", "0")) == 0


def launch(nproc: int, args: list[str]) -> int:
    """Run `dfkd-bench ARGS` as `nproc` processes under torchrun on this machine; returns its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "dfkd_bench", *args]
    return subprocess.call(command)


def current() -> Group:
    """The group this process has joined (one process when none)."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return SINGLE


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
