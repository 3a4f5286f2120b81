"""Decoded profiles a worker keeps between batches, bounded per process in bytes.

One cache serves every partition the process owns. Each entry is charged an estimate of its
Python heap from the size of its encoded form (the charge is known when the profile is
encoded for the changelog); past the limit, each partition gives up its least recently
written entries in proportion to its share of the bytes, down to 90 % of the limit, so a
trim runs once per tenth of the limit's worth of new profiles, not once per batch. An
evicted profile is read back from the store the next time its customer shows up.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from service.domain.profile import Profile

__all__ = ["ENTRY_OVERHEAD", "HEAP_PER_STORED_BYTE", "ProfileCache", "charge"]

# A decoded profile's heap against its encoded size, plus the two dict entries and the key:
# a little over, never under (the tracemalloc measurements: docs/decisions.md, "The profile
# cache bounded per process in bytes").
ENTRY_OVERHEAD = 1024
HEAP_PER_STORED_BYTE = 3
_TRIM_TO = 0.9  # trimmed to this share of the limit, so one trim serves several batches


def charge(stored_bytes: int) -> int:
    """The bytes an entry whose encoded profile has `stored_bytes` bytes is charged."""
    return ENTRY_OVERHEAD + HEAP_PER_STORED_BYTE * stored_bytes


class ProfileCache:
    """Per-partition maps of profile key -> decoded profile (None: removed by a batch not
    yet in the store), with one byte budget over all of them."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.bytes = 0
        self._profiles: dict[int, dict[bytes, Profile | None]] = {}
        # The same keys with their charges, least recently written first.
        self._charges: dict[int, dict[bytes, int]] = {}
        self._partition_bytes: dict[int, int] = {}

    def partition(self, partition: int) -> dict[bytes, Profile | None]:
        """The partition's map, for reading (write with `put`)."""
        profiles = self._profiles.get(partition)
        if profiles is None:
            profiles = self._profiles[partition] = {}
            self._charges[partition] = {}
            self._partition_bytes[partition] = 0
        return profiles

    def put(self, partition: int, key: bytes, profile: Profile | None, stored_bytes: int) -> None:
        """Hold `profile` for `key`, as the most recently written entry."""
        profiles = self.partition(partition)
        charges = self._charges[partition]
        cost = ENTRY_OVERHEAD + HEAP_PER_STORED_BYTE * stored_bytes
        delta = cost - charges.pop(key, 0)
        charges[key] = cost
        profiles[key] = profile
        self.bytes += delta
        self._partition_bytes[partition] += delta

    def maps(self, partition: int) -> tuple[dict[bytes, Profile | None], dict[bytes, int]]:
        """The partition's profiles and charges, for a caller writing many entries in a row
        (the processor, once per batch): per entry it pops the key's charge, sets the new one
        last, sets the profile, and then reports the sum of the changes to `grew`."""
        profiles = self.partition(partition)
        return profiles, self._charges[partition]

    def grew(self, partition: int, delta: int) -> None:
        """Account for entries written through `maps`: `delta` bytes more (or fewer)."""
        self.bytes += delta
        self._partition_bytes[partition] += delta

    def __len__(self) -> int:
        return sum(map(len, self._profiles.values()))

    def partition_bytes(self, partition: int) -> int:
        """The bytes charged to one partition's entries."""
        return self._partition_bytes.get(partition, 0)

    def reset(self, partition: int) -> None:
        """Empty one partition's map (it stays known)."""
        self.drop(partition)
        self.partition(partition)

    def drop(self, partition: int) -> None:
        """Forget a partition and its entries (revoked)."""
        self._profiles.pop(partition, None)
        self._charges.pop(partition, None)
        self.bytes -= self._partition_bytes.pop(partition, 0)

    def clear(self) -> None:
        """Empty every partition's map."""
        for partition in list(self._profiles):
            self.reset(partition)

    def trim(self, keep: Callable[[int], Container[bytes]]) -> int:
        """Past the limit, evict least recently written entries, each partition in proportion
        to its bytes, down to 90 % of the limit, sparing the keys in `keep(partition)` (their
        state is nowhere else yet); return how many were evicted."""
        if self.bytes <= self.limit:
            return 0
        excess = self.bytes - int(self.limit * _TRIM_TO)
        total = self.bytes
        evicted = 0
        for partition, charges in self._charges.items():
            goal = excess * self._partition_bytes[partition] // total
            if goal <= 0:
                continue
            spared = keep(partition)
            freed = 0
            gone: list[bytes] = []
            for key, cost in charges.items():
                if freed >= goal:
                    break
                if key in spared:
                    continue
                gone.append(key)
                freed += cost
            profiles = self._profiles[partition]
            for key in gone:
                del charges[key]
                del profiles[key]
            self._partition_bytes[partition] -= freed
            self.bytes -= freed
            evicted += len(gone)
        return evicted
