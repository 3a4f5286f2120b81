"""Reference data versioned in event time (service/domain/context_table.py): what a decision
at a given instant reads, against a brute-force model and in the cases the docs promise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.context_table import BEGINNING, ContextTable

KEYS = ["stock:a", "stock:b", "signal:x"]
HOUR = 3_600_000


class Model:
    """The table's promises written the slow, obvious way: per key a dict valid_from ->
    value; the oldest instant is dropped when a key holds more than `max_versions`. Before
    a key's first version it is absent; before the oldest kept one, once some were dropped,
    the oldest kept one holds."""

    def __init__(self, max_versions: int) -> None:
        self.max_versions = max_versions
        self.keys: dict[str, dict[int, Any]] = {}
        self.pruned: set[str] = set()

    def put(self, key: str, value: Any, valid_from: int) -> None:
        versions = self.keys.setdefault(key, {})
        versions[valid_from] = value
        if len(versions) > self.max_versions:
            del versions[min(versions)]
            self.pruned.add(key)

    def get_at(self, key: str, ts: int) -> Any:
        versions = self.keys.get(key)
        if not versions:
            return None
        in_force = [at for at in versions if at <= ts]
        if in_force:
            return versions[max(in_force)]
        return versions[min(versions)] if key in self.pruned else None

    def as_of(self, ts: int) -> dict[str, Any]:
        seen = {key: self.get_at(key, ts) for key in self.keys}
        return {key: value for key, value in seen.items() if value is not None}


puts = st.lists(
    st.tuples(st.sampled_from(KEYS),
              st.one_of(st.none(), st.integers(0, 5)),  # None deletes from then on
              st.one_of(st.just(BEGINNING), st.integers(0, 8))),  # few instants: many ties
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=puts, max_versions=st.integers(1, 4))
def test_reads_equal_the_brute_force_model(ops: list[tuple[str, Any, int]],
                                           max_versions: int) -> None:
    """After any sequence of puts (deletes, equal instants, pruning past max_versions), the
    value read at every instant, the mapping as of it and the kept versions equal the model."""
    table, model = ContextTable(max_versions), Model(max_versions)
    for key, value, valid_from in ops:
        table.put(key, value, valid_from)
        model.put(key, value, valid_from)
    for ts in [BEGINNING, -1, *range(0, 10)]:
        assert dict(table.as_of(ts)) == model.as_of(ts), ts
        for key in [*KEYS, "never-set"]:
            assert table.get_at(key, ts) == model.get_at(key, ts), (key, ts)
    for key in KEYS:
        assert table.versions(key) == sorted(model.keys.get(key, {}).items())
    assert len(table) == len(model.as_of(10**9))


def test_a_stock_out_and_a_restock_read_by_event_time() -> None:
    """Stock 5 from 09:00, 0 from 11:00, 7 from 14:00: each instant reads the value then in
    force; the newest version applies from its instant on."""
    table = ContextTable()
    table.put("stock:sku-1", 5, 9 * HOUR)
    table.put("stock:sku-1", 0, 11 * HOUR)
    table.put("stock:sku-1", 7, 14 * HOUR)
    assert table.as_of(10 * HOUR)["stock:sku-1"] == 5
    assert table.as_of(11 * HOUR)["stock:sku-1"] == 0  # in force from its own instant
    assert table.as_of(14 * HOUR - 1)["stock:sku-1"] == 0
    assert table.as_of(20 * HOUR)["stock:sku-1"] == 7
    assert table.latest == {"stock:sku-1": 7}


def test_records_arriving_out_of_order_are_placed_by_valid_from() -> None:
    """The order records arrive in does not matter, only their valid_from."""
    table = ContextTable()
    table.put("k", "late-version", 20)
    table.put("k", "early-version", 10)
    assert table.get_at("k", 15) == "early-version"
    assert table.get_at("k", 25) == "late-version"
    assert table.versions("k") == [(10, "early-version"), (20, "late-version")]


def test_an_event_before_the_first_version_reads_the_key_as_absent() -> None:
    """Before a key's first version the key is absent (a restock valid from 09:00:01 is not
    in force for a view at 09:00:00; the live == replay state machine found the opposite)."""
    table = ContextTable()
    table.put("k", 3, 100)
    assert table.get_at("k", 0) is None
    assert table.as_of(0) == {}
    assert table.get_at("k", 100) == 3


def test_a_null_value_deletes_the_key_from_its_instant_on() -> None:
    """A deletion hides the key from its valid_from on; earlier instants still read it, and a
    later version brings it back."""
    table = ContextTable()
    table.put("k", 1, 10)
    table.put("k", None, 20)
    assert "k" in table.as_of(15) and "k" not in table.as_of(25)
    assert table.as_of(25).get("k", "absent") == "absent"
    with pytest.raises(KeyError):
        table.as_of(25)["k"]
    assert len(table) == 0 and "k" not in table.latest
    table.put("k", 2, 30)
    assert table.get_at("k", 25) is None and table.get_at("k", 35) == 2


def test_two_records_for_the_same_instant_the_later_wins() -> None:
    """A second record for one key and instant replaces the first (last writer wins) and
    does not count as another version."""
    table = ContextTable(max_versions=2)
    table.put("k", 1, 10)
    table.put("k", 2, 20)
    table.put("k", 3, 20)
    assert table.versions("k") == [(10, 1), (20, 3)]


def test_history_is_bounded_and_the_oldest_versions_go_first() -> None:
    """At most max_versions per key (64 by default); once versions were dropped, what is
    older than the oldest kept version reads the oldest kept one (the closest known value)."""
    table = ContextTable()
    for minute in range(100):
        table.put("k", minute, minute * 60_000)
    kept = table.versions("k")
    assert len(kept) == 64 and kept[0] == (36 * 60_000, 36)
    assert table.get_at("k", 0) == 36


def test_of_makes_values_that_hold_from_the_beginning_of_time() -> None:
    """`ContextTable.of(mapping)` holds each value at any instant, the earliest included."""
    table = ContextTable.of({"a": 1, "b": {"x": 2}})
    assert table.as_of(BEGINNING) == {"a": 1, "b": {"x": 2}}
    assert table.versions("a") == [(BEGINNING, 1)]


def test_a_view_in_the_past_is_a_read_only_mapping() -> None:
    """As of an instant before the newest version, the mapping iterates, counts and tests
    membership over the keys present then only."""
    table = ContextTable()
    table.put("a", 1, 0)
    table.put("b", 2, 50)
    table.put("a", None, 100)
    past = table.as_of(60)
    assert sorted(past) == ["a", "b"] and len(past) == 2
    assert dict(table.as_of(100)) == {"b": 2}
    assert 7 not in past  # a non-string key is simply absent


def test_records_older_than_what_was_decided_count_as_late() -> None:
    """A record whose valid_from lies before the newest decided event time is counted late:
    decisions already made did not see it."""
    table = ContextTable()
    table.put("k", 1, 100)
    table.decided_ms = 200
    table.put("k", 2, 150)
    table.put("k", 3, 250)
    assert table.late == 1


def test_a_copy_is_independent() -> None:
    """A replay adding fired signals to its copy leaves the caller's table as it was."""
    table = ContextTable.of({"a": 1})
    other = table.copy()
    other.put("a", 2, 10)
    assert table.versions("a") == [(BEGINNING, 1)] and other.get_at("a", 10) == 2


def test_a_table_keeps_at_least_one_version() -> None:
    """max_versions below 1 is refused with a sentence."""
    with pytest.raises(ValueError, match="at least one version"):
        ContextTable(max_versions=0)
