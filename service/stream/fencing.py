"""Fencing stale writers: a worker that may have lost its partitions writes no changelog.

Two layers (docs/decisions.md, "Stale writers fenced"):

1. `GroupLease`: before a batch's changelog records are sent, and before offsets are
   committed, the runtime checks that the consumer group answered one of this worker's
   heartbeats less than `LEASE_FRACTION` of the session timeout ago, counted from when the
   heartbeat was *sent* (the broker's session clock starts no earlier). A worker paused past
   its session timeout (SIGSTOP, a long GC, a frozen VM) finds its lease expired when it
   resumes and abandons its batches instead of landing them after the new owner's.
2. Every changelog record carries the group generation it was written under
   (`GENERATION_HEADER`); recovery (service/stream/recovery.py) ignores a record whose generation is
   lower than one it already applied in the same partition. This covers what layer 1
   cannot: records handed to the producer just before the pause and sent after it.

Kafka transactions would fence by producer epoch, but the embedded broker (Tansu) has none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from service.stream.batch import Record
from service.stream.consumer import Consumer, TopicPartition
from service.stream.store import PartitionStore

__all__ = ["GENERATION_HEADER", "GENERATION_KEY", "LEASE_FRACTION", "AssignmentLost",
           "GroupLease", "generation_of", "rewind", "stamp"]

log = logging.getLogger(__name__)

# The changelog header naming the group generation a record was written under.
GENERATION_HEADER = "gen"
# In a partition's store (a key no profile can take, as `is_profile_key` says): the highest
# generation recovery has seen in the partition's changelog. Writers stamp at least this, so
# the stamps stay ordered when a group is deleted and its generations start again from 1.
GENERATION_KEY = b"\x00touchflow:changelog-generation"
# Half the session timeout: heartbeats go every fifth of it, so a healthy worker's lease is
# renewed about two and a half times per period, and what is still sent after the check
# passes has the other half to reach the broker before the member could be expired.
LEASE_FRACTION = 0.5


class AssignmentLost(RuntimeError):
    """The group has not answered a heartbeat for too long: this worker may no longer own its
    partitions, so it must not write their changelog or commit their offsets. The runtime
    abandons its batches in flight; whoever owns the partitions after the rebalance processes
    them again from the committed offsets."""


class GroupLease:
    """Whether this worker's group membership is still live, from aiokafka's heartbeats.

    aiokafka keeps the time of the last answered heartbeat in a local variable of its
    heartbeat loop, so `attach` wraps the coordinator's `_do_heartbeat` (the one call the
    loop makes per heartbeat; it returns True when the group answered, including "rebalance
    in progress", during which the member keeps its partitions) and reads `generation`. If a
    future aiokafka lacks either, the lease logs one warning and never fences.
    """

    def __init__(self, session_timeout_ms: int, *, fraction: float = LEASE_FRACTION,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = session_timeout_ms / 1000 * fraction
        self._clock = clock
        self._coordinator: Any = None
        self._renewed_at: float | None = None
        self.generation: int | None = None  # the generation of the current assignment

    @property
    def enabled(self) -> bool:
        """False until `attach` found aiokafka's heartbeat (then it never fences)."""
        return self._coordinator is not None

    def attach(self, consumer: Any) -> bool:
        """Watch a started consumer's heartbeats; False (and one warning) if it cannot."""
        coordinator = getattr(consumer, "_coordinator", None)
        heartbeat = getattr(coordinator, "_do_heartbeat", None)
        if coordinator is None or not callable(heartbeat) or \
                not hasattr(coordinator, "generation"):
            log.warning("cannot watch the consumer group's heartbeats (aiokafka's internals "
                        "changed): a worker paused past its session timeout is not fenced")
            return False

        async def watched() -> Any:
            sent = self._clock()
            answered = await heartbeat()
            if answered is True:
                self.renew(sent)
            return answered

        coordinator._do_heartbeat = watched
        self._coordinator = coordinator
        return True

    def renew(self, at: float | None = None) -> None:
        """The group confirmed the membership as of `at` (default: now)."""
        at = self._clock() if at is None else at
        if self._renewed_at is None or at > self._renewed_at:
            self._renewed_at = at

    def assigned(self) -> None:
        """Partitions were just assigned: the join renewed the membership, and the
        generation it got is the one this assignment's changelog records carry."""
        generation = getattr(self._coordinator, "generation", None)
        # (Tansu's first generation is 0; aiokafka's "none" is -1)
        self.generation = generation if isinstance(generation, int) and generation >= 0 \
            else None
        self.renew()

    def age(self) -> float | None:
        """Seconds since the membership was last confirmed (None: never)."""
        return None if self._renewed_at is None else self._clock() - self._renewed_at

    def live(self) -> bool:
        """True while the membership is surely live (always, when not attached)."""
        if not self.enabled:
            return True
        age = self.age()
        return age is not None and age < self.limit_s

    def check(self) -> int | None:
        """Raise `AssignmentLost` unless live; else the generation to stamp (None: none)."""
        if not self.live():
            age = self.age()
            since = "ever" if age is None else f"for {age:.1f}s"
            raise AssignmentLost(
                f"no heartbeat answered {since} (limit {self.limit_s:.1f}s, "
                f"{LEASE_FRACTION:g} of the session timeout): this worker may have lost its "
                "partitions, so it writes none of their changelog")
        return self.generation


def stamp(generation: int, store: PartitionStore) -> bytes:
    """The `GENERATION_HEADER` value for a partition's changelog records: the assignment's
    generation, or the highest the partition's changelog has seen if that is higher (the
    group was recreated and its generations started again)."""
    floor = store.get(GENERATION_KEY)
    if floor is not None and int(floor) > generation:
        generation = int(floor)
    return str(generation).encode()


def generation_of(headers: Iterable[tuple[str, bytes | None]] | None) -> int | None:
    """The generation a changelog record was written under; None for records from before
    generations were stamped (or from the Faust runtime, which does not stamp)."""
    if not headers:
        return None
    for name, value in headers:
        if name == GENERATION_HEADER:
            try:
                return int(value) if value is not None else None
            except ValueError:
                return None
    return None


def rewind(consumer: Consumer,
           batches: Iterable[Iterable[Record]]) -> dict[TopicPartition, int]:
    """Seek each partition the consumer still holds back to the first offset the abandoned
    batches' messages have in it, so that a fenced worker that keeps its partitions skips
    nothing; the positions set, by topic partition."""
    first: dict[tuple[str, int], int] = {}
    for messages in batches:
        for message in messages:
            slot = (message.topic, message.partition)
            offset = first.get(slot)
            if offset is None or message.offset < offset:
                first[slot] = message.offset
    positions = {}
    for tp in consumer.assignment():
        offset = first.get((tp.topic, tp.partition))
        if offset is not None:
            consumer.seek(tp, offset)
            positions[tp] = offset
    return positions
