"""A one-line progress bar on stderr: events, events/s and an ETA from bytes (or offsets) read."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

__all__ = ["Progress", "format_duration"]

Position = Callable[[], tuple[int, int | None]]
_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`h:mm:ss` (or `m:ss` under an hour)."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Redraws at most every `interval` seconds; `position()` gives (done, total) units."""

    def __init__(
        self,
        position: Position,
        *,
        stream: IO[str] | None = None,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.position = position
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._last = 0.0
        self._drawn = False

    def line(self, events: int) -> str:
        """The text of the bar for `events` processed so far."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = events / elapsed
        done, total = self.position()
        if total:
            fraction = min(1.0, done / total)
            filled = int(fraction * _WIDTH)
            bar = "#" * filled + "." * (_WIDTH - filled)
            eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
            return (f"[{bar}] {fraction:6.1%}  {events:,} events  {rate:,.0f} ev/s  "
                    f"ETA {format_duration(eta)}")
        return f"{events:,} events  {rate:,.0f} ev/s  {format_duration(elapsed)} elapsed"

    def __call__(self, events: int) -> None:
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self.stream.write("\r\x1b[2K" + self.line(events))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar so the summary starts on a clean line."""
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False
