"""Kafka's default partitioner: murmur2 of the key, as the Java client and aiokafka compute it.

The worker calls it for every new profile key (which partition owns it) and for every keyed
record it produces, so it is on the hot path (docs/decisions.md, "Kafka's partitioner in C").
`murmur2` here is the C MurmurHash2 of the `murmurhash2` package with Kafka's seed, or, where
that package is missing, `murmur2_py`, a pure-Python version (the key unpacked into 32-bit
words by one `struct.unpack`). Property tests hold both to aiokafka's result for any bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

__all__ = ["murmur2", "murmur2_py", "partition_for_key"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I").unpack for n in range(64)]


def murmur2_py(data: bytes) -> int:
    """MurmurHash2 (32-bit, Kafka's seed) of `data`, in Python."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    m = _M
    if words:
        unpack = _WORDS[words] if words < 64 else struct.Struct(f"<{words}I").unpack
        for k in unpack(data[: words << 2]):
            k = (k * m) & _MASK
            k ^= k >> 24
            h = ((h * m) & _MASK) ^ ((k * m) & _MASK)
    extra = length & 3
    if extra:
        tail = length & ~3
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    return h ^ (h >> 15)


def _c_murmur2() -> Callable[[bytes], int] | None:
    try:
        from murmurhash2 import murmurhash2
    except ImportError:  # pragma: no cover - the package is a declared dependency
        return None

    def murmur2(data: bytes) -> int:
        """MurmurHash2 (32-bit, Kafka's seed) of `data`, in C."""
        return int(murmurhash2(data, _SEED))

    return murmur2


murmur2: Callable[[bytes], int] = _c_murmur2() or murmur2_py


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a standard Kafka producer puts a record keyed `key` in."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
