"""Capped exponential backoff with full jitter.

Written here rather than with tenacity because the connection loop needs the attempt count to reset
after a healthy session, and a long-lived loop, not one retried call, owns it.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.1, cap: float = 10.0, factor: float = 2.0) -> None:
        self.initial, self.cap, self.factor = initial, cap, factor
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
