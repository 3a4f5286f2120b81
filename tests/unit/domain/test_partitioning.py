"""Our murmur2 partitioner (service/domain/partitioning.py) against aiokafka's reference."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.partitioning import murmur2, murmur2_py, partition_for_key


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=400))
def test_murmur2_equals_aiokafkas_for_any_key(key: bytes) -> None:
    """Every byte string hashes exactly as aiokafka (and the Java client) hashes it, including
    every tail length and keys longer than the pre-built unpackers."""
    assert murmur2(key) == reference(key)
    assert murmur2_py(key) == reference(key)


@given(st.binary(min_size=1, max_size=64), st.integers(1, 512))
def test_partition_is_the_standard_producers(key: bytes, partitions: int) -> None:
    """A record keyed `key` lands where any standard Kafka producer would put it."""
    assert partition_for_key(key, partitions) == (reference(key) & 0x7FFFFFFF) % partitions


def test_known_java_client_values() -> None:
    """The values Kafka's own UtilsTest.testMurmur2 pins for the Java client (signed ints)."""
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, signed in cases.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key
        assert murmur2_py(key) == signed & 0xFFFFFFFF, key
