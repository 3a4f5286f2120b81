"""Shrunk failures the live == replay state machine found, kept as plain regression tests:
each replays the machine's steps in the order Hypothesis reported them."""

from __future__ import annotations

from tests.properties.test_live_equals_replay import LiveEqualsReplay


def test_a_restock_valid_after_an_event_is_not_in_force_for_it() -> None:
    """A view at 09:00:00 decided without stock, then a restock valid from 09:00:01: replay
    must not read the restock for the view either (the versioned context table answered an
    event before a key's first version with that version, so replay sent `restocked` where the
    worker had not)."""
    state = LiveEqualsReplay()
    state.stock_from_the_start(stock=0)
    state.produce(body=("view", {"sku": "sku-2"}), foreign=None, identity={"customer_id": "c1"},
                  late_s=0, poison=1, step_s=0)
    state.deliver(commit=False, count=1, fail=None, mix=[], partition=0)
    state.deliver(commit=False, count=11, fail=None, mix=[], partition=0)
    state.restock(ahead_s=1, sku="sku-2", stock=2)
    state.teardown()


def test_failed_pipelined_batches_dropped_by_a_rebalance_are_consumed_again() -> None:
    """A pipelined pair of batches (partitions 0 and 2) fails on its first shipment, then
    partition 0 moves: the second batch's erasure must be consumed again from the committed
    offset (the model dropped it, so its audit record, shipped before the failure, had no
    counterpart in replay)."""
    state = LiveEqualsReplay()
    state.stock_from_the_start(stock=0)
    state.erase(identity={"anonymous_id": "a2"}, step_s=0)
    state.deliver_pipelined(commit=False, counts=(1, 1), fail=(1, "lost"), first=0, second=2)
    state.rebalance(partition=0)
    state.teardown()
