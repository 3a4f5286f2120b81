"""Keeping Python's full garbage collections off the hot path of a long-running worker.

A worker caches its profiles as Python objects (up to `TOUCHFLOW_PROFILE_CACHE_BYTES`).
CPython's cyclic collector periodically scans the oldest generation, which holds all of them:
a pause that showed as the p99 of event-to-action latency (docs/decisions.md, "Full garbage
collections kept off the hot path", has the measurements).

The policy: after each batch, collect the young generations (`gc.collect(1)`: at most a few
thousand objects, well under a millisecond, and where fresh cyclic garbage such as asyncio
internals lives), then move every survivor into the permanent generation (`gc.freeze()`,
constant time), so the collector only ever scans objects created since the last batch. The
young threshold stays at CPython's 700: a larger one made fewer but longer collections land
inside batches.
Profile data has no reference cycles and is freed by reference counting when dropped from the
cache, frozen or not. Cyclic garbage that still got frozen is reclaimed by one full
collection every `full_every_s` (default 10 minutes): unfreeze, collect, freeze; its pause is
logged.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["GcPolicy"]

log = logging.getLogger(__name__)


class GcPolicy:
    """Call `after_batch()` after each processed batch (cheap: a clock read, mostly)."""

    def __init__(self, *, freeze_every_s: float = 0.0, full_every_s: float = 600.0,
                 collect_young: bool = True) -> None:
        self.freeze_every_s = freeze_every_s
        # False: freeze without collecting the young generations first (replay: no asyncio
        # cycles, and the automatic young collections still run between calls)
        self.collect_young = collect_young
        self.full_every_s = full_every_s
        now = time.monotonic()
        self._frozen_at = now
        self._full_at = now
        self.full_collections = 0

    def after_batch(self) -> None:
        now = time.monotonic()
        if now - self._full_at >= self.full_every_s:
            started = time.perf_counter()
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            pause = time.perf_counter() - started
            self._full_at = self._frozen_at = time.monotonic()
            self.full_collections += 1
            log.info("full garbage collection", extra={"freed": freed,
                                                       "pause_ms": round(pause * 1000, 1)})
        elif now - self._frozen_at >= self.freeze_every_s:
            if self.collect_young:
                gc.collect(1)
            gc.freeze()
            self._frozen_at = now

    def close(self) -> None:
        """Give the objects back to the collector (tests and embedded use)."""
        gc.unfreeze()
