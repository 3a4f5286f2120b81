"""Learned propensity counts shared by every worker through a compacted topic.

Responses arrive on the partition of the customer who answered, so each worker sees only its
partitions' share of them. Each worker keeps, per partition it owns, the cumulative accepted/
declined counts per (action, segment) and publishes them after every batch that changed them
to `<app_id>-<prefix>.propensities`, keyed by the partition number (compacted: the latest
record per partition is the partition's whole tally). Every worker follows that topic from the
beginning (service/context.py's reader), so its arbitration sees the sum over all partitions:
its own live counts plus the others' latest published ones. A partition that moves to another
worker (rebalance, restart) continues from its last published tally, so learning survives
restarts and scales out. Counts are exact except around a crash, where the responses of the
batch in flight may count twice (the batch is replayed after its counts were published).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from schemas.codec import JSONDecodeError, dumps, loads
from service.domain.learning import PropensityTable, context_key

__all__ = ["SharedPropensities", "apply_counts_record"]

_SEP = "\x1f"


def apply_counts_record(table: dict[str, Any], key: bytes | None, value: bytes | None) -> bool:
    """Reader hook: `table[<partition>] = {"action\\x1fsegment": [accepted, declined]}`."""
    if not key:
        return False
    name = key.decode("utf-8", "replace")
    if value is None:
        table.pop(name, None)
        return True
    try:
        data = loads(value)
    except JSONDecodeError:
        return False
    if not isinstance(data, dict):
        return False
    table[name] = data
    return True


class SharedPropensities:
    """This worker's per-partition tallies, and the sum every decision reads."""

    def __init__(self, published: Mapping[str, Any]) -> None:
        self.published = published  # partition (as text) -> its latest published tally
        self.own: dict[int, PropensityTable] = {}
        self.dirty: set[int] = set()

    def adopt(self, partition: int) -> None:
        """Take over a partition: continue from its latest published tally."""
        table = PropensityTable()
        for action, segment, counts in _entries(self.published.get(str(partition))):
            table.counts[(action, segment)] = [int(counts[0]), int(counts[1])]
        self.own[partition] = table

    def release(self, partition: int) -> None:
        self.own.pop(partition, None)
        self.dirty.discard(partition)

    def observe(self, partition: int, responses: Sequence[tuple[str, str, str]]) -> None:
        table = self.own.get(partition)
        if table is None:
            self.adopt(partition)
            table = self.own[partition]
        for action, segment, response in responses:
            table.observe(action, segment, response)
        self.dirty.add(partition)

    def restore(self, own: dict[int, dict[tuple[str, str], list[int]]],
                dirty: set[int]) -> None:
        """Go back to counts saved earlier (a batch abandoned after a failure)."""
        for partition, counts in own.items():
            table = PropensityTable()
            table.counts.update({key: list(c) for key, c in counts.items()})
            self.own[partition] = table
        self.dirty = set(dirty) & set(self.own)

    def snapshot(self) -> dict[str, list[int]]:
        """Counts over all partitions, as decide() reads them from the context."""
        total: dict[str, list[int]] = {}
        for table in self.own.values():
            for (action, segment), counts in table.counts.items():
                _add(total, context_key(action, segment), counts)
        owned = {str(p) for p in self.own}
        for partition, tally in self.published.items():
            if partition not in owned:
                for action, segment, counts in _entries(tally):
                    _add(total, context_key(action, segment), counts)
        return total

    def drain(self) -> list[tuple[bytes, bytes]]:
        """(key, value) records of the partitions whose tally changed since the last drain."""
        out = []
        for partition in sorted(self.dirty):
            table = self.own.get(partition)
            if table is None:
                continue
            body = {f"{a}{_SEP}{s}": counts for (a, s), counts in table.counts.items()}
            out.append((str(partition).encode(), dumps(body)))
        self.dirty.clear()
        return out


def _entries(tally: Any) -> Iterator[tuple[str, str, list[Any]]]:
    """(action, segment, [accepted, declined]) of a published tally; malformed parts skipped."""
    if isinstance(tally, dict):
        for name, counts in tally.items():
            action, _, segment = str(name).partition(_SEP)
            if isinstance(counts, list) and len(counts) == 2:
                yield action, segment, counts


def _add(total: dict[str, list[int]], key: str, counts: list[int]) -> None:
    current = total.get(key)
    if current is None:
        total[key] = [int(counts[0]), int(counts[1])]
    else:
        current[0] += int(counts[0])
        current[1] += int(counts[1])
