"""Progress lines for long work (training steps, embedding batches, probe tasks): a line when a stretch of work is
due for one, so that a long step says where it is at least every ``every_s`` seconds (as long as one unit of work
takes less than that), with the rate and the time left.

    p = Progress("sft_embeddings", total=len(contexts), unit="contexts", log=context.log.info)
    for batch in batches:
        ...
        p.advance(len(batch), note=f"{tok_s:,.0f} tokens/s")   # logs only when due
    p.finish()                                               # always one last line

The log function is the caller's (the Dagster logger in assets, ``print`` in command-line tools). No torch, no
dagster: every layer may use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 15.0  # a line at least this often while units of work keep finishing: 30 s gaps for units up to 15 s


def duration(seconds: float) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 02 min``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class Progress:
    """Counts units of work toward ``total`` (None: unknown) and logs ``label: done/total unit (pct), rate, time
    left, elapsed`` through ``log`` (None: silent) when ``every_s`` seconds have passed since the last line (this
    one's or, after :meth:`mark`, the caller's own). ``clock`` is injectable for tests."""

    def __init__(
        self,
        label: str,
        total: int | None,
        log: Callable[[str], None] | None,
        *,
        unit: str = "items",
        start: int = 0,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        every_s = EVERY_S if every_s is None else every_s
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.label, self.total, self.log, self.unit, self.every_s, self.clock = label, total, log, unit, every_s, clock
        self.done = self.start = start  # units done before this count began (a resumed run): not in the rate
        self.shown: int | None = None  # the count the last line showed
        self.t0 = self.last = clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def rate(self) -> float:
        """Units per second since the count began."""
        return (self.done - self.start) / max(self.elapsed(), 1e-9)

    def due(self) -> bool:
        return self.clock() - self.last >= self.every_s

    def mark(self, done: int | None = None) -> None:
        """The caller logged a line of its own that shows the progress (``done`` units so far): the next one is due
        ``every_s`` from now."""
        if done is not None:
            self.done = done
        self.last, self.shown = self.clock(), self.done

    def status(self) -> str:
        """``done/total unit (pct), rate, time left`` (no label, no elapsed time)."""
        r = self.rate()
        if not self.total:
            return f"{self.done:,} {self.unit}, {r:,.1f} {self.unit}/s"
        left = f", {duration((self.total - self.done) / r)} left" if self.done < self.total and r > 0 else ""
        pct = 100.0 * self.done / self.total
        return f"{self.done:,}/{self.total:,} {self.unit} ({pct:.0f} %), {r:,.1f} {self.unit}/s{left}"

    def line(self, note: str = "") -> str:
        """``label: status, elapsed so far | note``."""
        return f"{self.label}: {self.status()}, {duration(self.elapsed())} so far" + (f" | {note}" if note else "")

    def advance(self, n: int = 1, *, note: str = "") -> bool:
        """``n`` more units done; logs a line when one is due. Returns whether it logged."""
        return self.at(self.done + n, note=note)

    def at(self, done: int, *, note: str = "") -> bool:
        """``done`` units done so far; logs a line when one is due and the count moved since the last line. Returns
        whether it logged."""
        self.done = done
        if self.log is None or not self.due() or done == self.shown:
            return False
        self.log(self.line(note))
        self.mark()
        return True

    def finish(self, note: str = "") -> None:
        """The closing line (always logged)."""
        if self.log is not None:
            self.log(self.line(note))
            self.mark()
