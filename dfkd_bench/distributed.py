"""One run data-parallel over a torch.distributed process group (torchrun, or `dfkd-bench run --nproc N`).

Every rank synthesises its share of each round with its own RNG stream; the new images are
all-gathered so every rank banks (and samples) the whole bank; the generator's gradients are averaged
so its update is the same everywhere; the student trains under DistributedDataParallel; evaluation is
sharded and its counts summed; only rank 0 writes. With one process (`Group()`) every collective is
a no-op, so the single-process engine runs the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

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
        """Average tensors in place across ranks (gradients kept identical everywhere)."""
        if not self.active:
            return
        for t in tensors:
            if t is not None:
                dist.all_reduce(t)
                t.div_(self.world_size)

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


def _collective_device() -> torch.device:
    """Where a host value must be to take part in a collective: the GPU under nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True inside a process torchrun started for a group of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_type: str) -> Group:
    """Join the group torchrun described in the environment (nccl on CUDA, gloo on the CPU); one
    process outside torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())


@contextmanager
def sized_as(world_size: int | None) -> Iterator[None]:
    """Inside the block, runs resolve as in a group of `world_size` processes (WORLD_SIZE set, then
    restored, whatever happens); None leaves the environment alone."""
    if world_size is None:
        yield
        return
    before = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = str(world_size)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = before


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
