"""Learned propensity counts shared between workers: each worker publishes the tallies of the
partitions it owns, sees the sum over all partitions, and a partition that moves continues
from its last published tally."""

from __future__ import annotations

from typing import Any

from service.propensities import SharedPropensities, apply_counts_record


def _publish(source: SharedPropensities, topic: dict[str, Any]) -> None:
    for key, value in source.drain():
        assert apply_counts_record(topic, key, value)


def test_two_workers_see_the_sum_and_a_moved_partition_keeps_its_tally() -> None:
    """Worker A owns partition 0, worker B partition 1: after publishing, both snapshots hold
    the sum; when B takes partition 0 over (A stopped), it continues from A's tally."""
    topic: dict[str, Any] = {}
    a, b = SharedPropensities(topic), SharedPropensities(topic)
    a.adopt(0)
    b.adopt(1)
    a.observe(0, [("offer", "all", "accepted"), ("offer", "all", "declined")])
    b.observe(1, [("offer", "all", "accepted"), ("offer", "vip", "shown")])
    assert a.snapshot() == {"propensity:offer:all": [1, 1]}  # B has not published yet
    _publish(a, topic)
    _publish(b, topic)
    expected = {"propensity:offer:all": [2, 1]}
    assert a.snapshot() == expected and b.snapshot() == expected
    a.release(0)
    b.adopt(0)
    b.observe(0, [("offer", "all", "accepted")])
    assert b.snapshot() == {"propensity:offer:all": [3, 1]}
    assert not a.drain()  # nothing owned, nothing to publish


def test_malformed_records_are_ignored() -> None:
    """A record without a key, or whose value is not a JSON object, changes nothing; a null
    value (tombstone) removes the partition's tally."""
    topic: dict[str, Any] = {"3": {"a\x1fall": [1, 0]}}
    assert not apply_counts_record(topic, None, b"{}")
    assert not apply_counts_record(topic, b"3", b"[1, 2]")
    assert not apply_counts_record(topic, b"3", b"not json")
    assert topic == {"3": {"a\x1fall": [1, 0]}}
    assert apply_counts_record(topic, b"3", None) and topic == {}
