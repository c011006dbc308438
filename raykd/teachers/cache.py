"""The object-store copies of a teacher service's finished tables and the rule that evicts them.

At most ``keep`` finished tables per teacher stay in the object store, the oldest evicted first; an evicted table
is read back from the persistent store (or made again) when a trial that was restarted asks for it. When each
table first came to exist is remembered (``produced``), evicted or not.
"""
from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TableCache"]


class TableCache:
    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.held: dict[tuple[str, int, int | None], Callable[[], None]] = {}  # insertion order = age
        self.produced: dict[tuple[str, int, int | None], float] = {}

    def add(self, teacher: str, seed: int, view: int | None, evict: Callable[[], None]) -> None:
        """Hold the table of (``teacher``, ``seed``, ``view``); ``evict()`` drops its object-store copy."""
        key = (teacher, seed, view)
        self.produced.setdefault(key, time.time())
        self.held.pop(key, None)
        self.held[key] = evict
        mine = [k for k in self.held if k[0] == teacher]
        for old in mine[:max(0, len(mine) - self.keep)]:
            self.held.pop(old)()

    def produced_by(self, teacher: str) -> dict[tuple[int, int | None], float]:
        return {(seed, view): t for (name, seed, view), t in self.produced.items() if name == teacher}
