"""The processor's three steps (begin, send_changelog, complete) overlapped across batches as
the lean runtime runs them, against one batch at a time: the same actions, audit records,
dead letters, changelog, learned propensities and store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import service.domain.step as step_module
from tests.component.pipeline_harness import (
    LEARNING,
    Broker,
    ends,
    journey_lines,
    learning_lines,
    pipelined,
    sequential,
)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
@pytest.mark.parametrize("cache_bytes", [None, 0])
async def test_overlapped_batches_leave_what_one_at_a_time_leaves(
    tmp_path: Path, store: str, cache_bytes: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's pipeline (a batch begun while the one before waits for its changelog's
    acknowledgement) sends the same records to every topic, in the same order per topic, and
    leaves the same profiles, checkpoints and counts as `process()` one batch at a time; also
    with a cache of no bytes (only the batches in flight kept), so eviction meets profiles
    not yet in the store (an erasure among them). Every offset is committed, in order."""
    if cache_bytes is not None:
        monkeypatch.setenv("TOUCHFLOW_PROFILE_CACHE_BYTES", str(cache_bytes))
    expected = await sequential(tmp_path, store, journey_lines)
    run = await pipelined(tmp_path, store, Broker(), journey_lines)
    assert expected["actions"] and expected["deadletter"], "this test would prove nothing"
    assert run.result == expected
    # the batches did overlap: one began before the one before it was complete
    steps = run.steps
    assert any(steps.index(f"begin {n + 1}") < steps.index(f"complete {n}")
               for n in range(1, len(run.consumer.fetches)))
    assert run.consumer.commits == len(run.consumer.fetches)
    assert run.consumer.committed == ends(run.consumer.fetches)


async def test_learning_rulebook_pipelined_equals_one_at_a_time(tmp_path: Path) -> None:
    """With learned propensities (cross-customer state read by every decision), the pipeline
    keeps the same tallies and sends the same actions as one batch at a time."""
    rules = LEARNING / "rulebook.yaml"
    expected = await sequential(tmp_path, "memory://", learning_lines, rules)
    run = await pipelined(tmp_path, "memory://", Broker(), learning_lines, rules)
    assert expected["tallies"], "this test would prove nothing"
    assert run.result == expected


@pytest.mark.parametrize("cache_bytes", [None, 0])
async def test_a_decide_failure_restores_the_profile_the_pipeline_last_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_bytes: int | None
) -> None:
    """decide() raising after it half-updated a cached profile (every event id ending in 7):
    the event is dead-lettered and the profile goes back to its newest encoded state, which
    in the pipeline may be a batch not yet in the store; outputs equal one at a time."""
    real = step_module.decide

    def flaky(profile: Any, event: Any, context: Any, rulebook: Any) -> Any:
        outcome = real(profile, event, context, rulebook)  # updates in place, then fails
        if event.event_id.endswith("7"):
            raise ValueError("a bug")
        return outcome

    monkeypatch.setattr(step_module, "decide", flaky)
    if cache_bytes is not None:
        monkeypatch.setenv("TOUCHFLOW_PROFILE_CACHE_BYTES", str(cache_bytes))
    expected = await sequential(tmp_path, "memory://", journey_lines)
    run = await pipelined(tmp_path, "memory://", Broker(), journey_lines)
    assert sum(b'"decision_error"' in v for _, v, _, _ in expected["deadletter"]) > 10
    assert run.result == expected
