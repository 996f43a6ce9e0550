"""What each round of a run does, decided before the run starts: images, warm-up, KD steps, resets.

The engine hands each round's `RoundInfo` to the method (`Method.begin_round`); methods read it and
never count rounds themselves, so both budget protocols drive every method the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoundInfo:
    """One synthesis round as the schedule sees it (read-only for methods).

    `epoch` is the reference code's epoch the round belongs to (under the equal protocol every round
    is its own epoch); `reset_generator` asks generator methods to re-initialise their generator
    before synthesising (NAYER's g_life); `reset_l0` asks Fast to re-draw its meta-generator's first
    layers (Fast's reset_l0).
    """

    index: int
    epoch: int
    images: int
    warmup: bool
    kd_steps: int
    reset_generator: bool = False
    reset_l0: bool = False
