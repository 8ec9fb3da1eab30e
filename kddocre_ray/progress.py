"""Progress on long work: a line now and then (done, rate, time left), not a redrawn bar, so that
it reads the same in a terminal, a `ray job logs` stream and a CI log."""
from __future__ import annotations

import time
from collections.abc import Callable


def clock(seconds: float) -> str:
    """1h02m, 4m05s, 12s."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """`add(n)` as work is done; a line at most every `every` seconds, and one by `end()`."""

    def __init__(self, what: str, total: int | None = None, unit: str = "documents", every: float = 10.0,
                 log: Callable[[str], None] = print):
        self.what, self.total, self.unit, self.every, self.log = what, total, unit, every, log
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        of = f"/{self.total:,}" if self.total else ""
        left = (f", ETA {clock((self.total - self.done) / rate)}" if self.total and rate > 0 and self.done < self.total
                else "")
        return f"[kddocre] {self.what}: {self.done:,}{of} {self.unit}, {rate:.1f} {self.unit}/s, {clock(elapsed)}{left}"

    def end(self) -> None:
        self.log(self.line())
