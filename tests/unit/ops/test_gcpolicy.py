"""The worker's garbage-collection policy: survivors are frozen between batches (so the
collector never rescans the profile cache), and a periodic full collection still reclaims
cyclic garbage that was frozen."""

from __future__ import annotations

import gc
import weakref

from service.ops.gcpolicy import GcPolicy


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_survivors_are_frozen_and_periodic_full_collection_reclaims_cycles() -> None:
    """After a batch the live objects sit in the permanent generation; a cycle that became
    garbage while frozen is freed by the next full collection, and `close()` unfreezes."""
    policy = GcPolicy(freeze_every_s=0.0, full_every_s=3600.0)
    try:
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        probe = weakref.ref(first)
        policy.after_batch()
        assert gc.get_freeze_count() > 0
        del first, second
        gc.collect()
        assert probe() is not None  # frozen: the collector does not see the dead cycle
        policy.full_every_s = 0.0
        policy.after_batch()
        assert probe() is None and policy.full_collections == 1
    finally:
        policy.close()
    assert gc.get_freeze_count() == 0


def test_worker_policy_collects_young_garbage_before_freezing_and_replay_policy_does_not() -> None:
    """The worker's policy collects the young generations before it freezes (a fresh dead
    cycle, e.g. from asyncio, is freed at once); replay's policy only freezes (its dead cycles
    wait for the periodic full collection), which is what makes it cheaper."""
    for collect_young in (True, False):
        gc.collect()
        policy = GcPolicy(freeze_every_s=0.0, full_every_s=3600.0, collect_young=collect_young)
        try:
            first, second = _Node(), _Node()
            first.other, second.other = second, first
            probe = weakref.ref(first)
            del first, second
            policy.after_batch()
            assert (probe() is None) is collect_young
        finally:
            policy.close()
            gc.collect()
