"""The FLOP counter's own overhead, taken back out of the synthesis seconds it slowed down."""

from __future__ import annotations

from typing import Hashable


class CounterOverhead:
    """Settles what counting FLOPs cost in time. The first round of a work key runs under the counter
    (slower: Python dispatch per op); when a round of the same key next runs plainly, the difference of
    the two rounds' seconds is the counter's overhead, given back once (a key seen once keeps it)."""

    def __init__(self) -> None:
        self.counted_seconds: dict[Hashable, float] = {}  # seconds of rounds run under the counter, unsettled

    def discount(self, key: Hashable, seconds: float, counted: bool, slack: float) -> float:
        """The seconds to take off after a round of `key` that took `seconds` (under the counter when
        `counted`): counted minus plain seconds for the key's first plain round, at most `slack` (so the
        elapsed time the curve already shows never runs backwards), never below 0; else 0."""
        if counted:
            self.counted_seconds[key] = seconds
            return 0.0
        if key not in self.counted_seconds:
            return 0.0
        return max(0.0, min(self.counted_seconds.pop(key) - seconds, slack))
