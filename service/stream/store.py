"""Per-partition profile stores: RocksDB (rocksdict) on disk, or a plain dict in memory.

Each store holds, for one partition of the profile changelog, the serialised profile of every
customer key, plus the changelog offset up to which it is complete (the *checkpoint*). A batch
is written atomically (profiles and checkpoint in one RocksDB WriteBatch), and only after its
changelog records were acknowledged by the broker, so a restarted worker replays the changelog
from ``checkpoint + 1`` and can never be ahead of it.

RocksDB's write-ahead log is off (as in Kafka Streams): the changelog is the durable copy. A
crash loses the memtable's batches whole, checkpoint included (a batch never straddles a
flush), so the store falls back to an older consistent checkpoint and recovery replays the
changelog from there; a clean close flushes first (docs/decisions.md, "RocksDB without its
write-ahead log").
"""

from __future__ import annotations

import shutil
from collections.abc import Container, Iterable, Mapping
from pathlib import Path
from typing import Protocol

__all__ = ["CAPACITY_KEY", "LEARNING_KEY", "TOMBSTONE_PREFIX", "MemoryStore", "PartitionStore",
           "RocksStore", "StoreError", "is_profile_key", "open_store", "tombstone_key"]

_CHECKPOINT_KEY = b"\x00touchflow:changelog-offset"
# A partition's learned propensity tallies: stored and changelogged like a profile, under a
# key no identifier can take (profile keys are `<field>:<value>`).
LEARNING_KEY = b"\x00touchflow:learning"
# A partition's capacity quotas, owned and held (service/domain/capacity.py), likewise.
CAPACITY_KEY = b"\x00touchflow:capacity"
# Erasure tombstones (service/domain/erasure.py): this prefix, then the key digest (hex);
# the value is the erasure time in epoch milliseconds (ASCII digits).
TOMBSTONE_PREFIX = b"\x00touchflow:erased:"


def tombstone_key(digest: str) -> bytes:
    """The store and changelog key of a tombstone, by the erased key's digest."""
    return TOMBSTONE_PREFIX + digest.encode("ascii")


def is_profile_key(key: bytes) -> bool:
    """Profile keys, as opposed to the store's own entries (checkpoint, learned tallies)."""
    return not key.startswith(b"\x00")
_NO_CHECKPOINT = -1


class StoreError(RuntimeError):
    """The local state directory cannot be used; the message says what to fix."""


class PartitionStore(Protocol):
    """Key -> serialised profile, for one partition, with the changelog checkpoint."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, items: Mapping[bytes, bytes | None], checkpoint: int,
              existing: Container[bytes] | None = None) -> None:
        """Write a batch atomically. `existing`, when the caller knows it, holds the keys of
        `items` already in the store (it spares the store a lookup per key to keep `count`)."""
        ...

    def checkpoint(self) -> int: ...

    def count(self) -> int: ...

    def recount(self) -> None:
        """Count the profiles again (after writes that passed an `existing` that was not
        exact: recovery into an empty store skips a lookup per key)."""
        ...

    def keys(self) -> Iterable[bytes]: ...

    def scan(self, prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix` (the store's own entries)."""
        ...

    def close(self) -> None: ...

    def wipe(self) -> None: ...


class MemoryStore:
    """A dict; the changelog is its only durable copy (full replay on every start)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._checkpoint = _NO_CHECKPOINT

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, items: Mapping[bytes, bytes | None], checkpoint: int,
              existing: Container[bytes] | None = None) -> None:
        data = self._data
        for key, value in items.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._checkpoint = max(self._checkpoint, checkpoint)

    def checkpoint(self) -> int:
        return self._checkpoint

    def count(self) -> int:
        return sum(1 for key in self._data if is_profile_key(key))

    def recount(self) -> None:
        """Counted when asked: nothing to do."""

    def keys(self) -> Iterable[bytes]:
        return [key for key in self._data if is_profile_key(key)]

    def scan(self, prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self._data.items() if k.startswith(prefix))

    def close(self) -> None:
        """Nothing to release."""

    def wipe(self) -> None:
        self._data.clear()
        self._checkpoint = _NO_CHECKPOINT


class RocksStore:
    """One RocksDB database per partition under the data directory."""

    def __init__(self, path: Path) -> None:
        from rocksdict import BlockBasedOptions, Options, Rdict, WriteOptions

        self.path = path
        self._write_options = WriteOptions()
        # a property at run time (rocksdict's stub declares a method); a test checks the
        # log stays empty
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            # Bloom filters on the tables and the memtable: a new customer's lookup is
            # answered "absent" without a seek (docs/decisions.md, "RocksDB without its
            # write-ahead log"). 10 bits a key: 1.2 MiB per million profiles.
            table = BlockBasedOptions()
            table.set_bloom_filter(10, False)
            options.set_block_based_table_factory(table)
            options.set_memtable_prefix_bloom_ratio(0.1)
            options.set_memtable_whole_key_filtering(True)
            self._db = Rdict(str(path), options)
        except Exception as exc:
            raise StoreError(
                f"cannot open the profile store at {path} ({exc}); "
                "check that TOUCHFLOW_DATA_DIR is writable and not used by another worker"
            ) from None
        self._count = self._count_keys()

    def _count_keys(self) -> int:
        return sum(1 for key in self._db.keys()  # noqa: SIM118
                   if isinstance(key, bytes) and is_profile_key(key))

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if value is None else bytes(value)

    def write(self, items: Mapping[bytes, bytes | None], checkpoint: int,
              existing: Container[bytes] | None = None) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        db = self._db
        known = existing if existing is not None else db
        for key, value in items.items():
            if key[:1] == b"\x00":  # (is_profile_key inlined: one call less per key)
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                continue
            existed = key in known
            if value is None:
                batch.delete(key)  # (also when `existing` says absent: it may not be exact)
                if existed:
                    self._count -= 1
            else:
                batch.put(key, value)
                if not existed:
                    self._count += 1
        if checkpoint > self.checkpoint():
            batch.put(_CHECKPOINT_KEY, str(checkpoint).encode())
        db.write(batch, self._write_options)

    def checkpoint(self) -> int:
        raw = self._db.get(_CHECKPOINT_KEY)
        return int(raw) if raw is not None else _NO_CHECKPOINT

    def count(self) -> int:
        return self._count

    def recount(self) -> None:
        self._count = self._count_keys()

    def keys(self) -> Iterable[bytes]:
        return [k for k in self._db.keys() if isinstance(k, bytes) and is_profile_key(k)]  # noqa: SIM118

    def scan(self, prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
        out = []
        for key, value in self._db.items(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            out.append((key, bytes(value)))
        return out

    def close(self) -> None:
        self._db.flush()  # without a WAL, the memtable is the only copy of recent batches
        self._db.close()

    def wipe(self) -> None:
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.__init__(self.path)  # type: ignore[misc]


def open_store(kind: str, data_dir: Path, app_id: str, partition: int) -> PartitionStore:
    """Open the store of one partition: `rocksdb://` (default) or `memory://`."""
    if kind == "memory://":
        return MemoryStore()
    return RocksStore(data_dir / app_id / "profiles" / f"p{partition:04d}")
