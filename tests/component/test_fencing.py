"""Stale writers fenced, without a broker: the processor stamps its changelog records with the
group generation and sends none when its fence raises; the lean runtime, when its group lease
expires mid-stream (a worker paused past its session timeout), writes no changelog and
commits nothing until the lease is renewed, then processes the abandoned batches again from
where they began, ending exactly as a run without the lapse."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from service.domain.rules import load_rulebook
from service.stream.fencing import GENERATION_HEADER, GENERATION_KEY, AssignmentLost, GroupLease
from service.stream.processor import Message, Processor
from service.stream.runtime import KafkaRuntime
from service.stream.sink import MemorySink
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import (
    TP,
    Broker,
    fetches_of,
    flat,
    journey_lines,
    no_recovery,
    outcome,
    profiles,
    sequential,
    settings_for,
    values,
)


def _processor(tmp: Path, sink: MemorySink, fence: Any) -> Processor:
    settings = settings_for(tmp, "memory://")
    topics = TopicNames.from_settings(settings)
    return Processor(settings, topics, load_rulebook(settings.rules), sink,
                     recover=no_recovery, fence=fence)


async def test_changelog_records_carry_the_generation_the_fence_names(tmp_path: Path) -> None:
    """Every changelog record gets a `gen` header with the fence's generation, or the
    highest generation the partition's changelog has seen when that is higher."""
    sink = MemorySink()
    processor = _processor(tmp_path, sink, lambda: 7)
    fetches = fetches_of(journey_lines(tmp_path), processor, processor.topics)
    await processor.process(flat(fetches[0]))
    floor_partition = sink.on(processor.topics.changelog)[0].partition
    store = processor.store(floor_partition)
    assert store is not None
    store.write({GENERATION_KEY: b"40"}, -1)
    await processor.process(flat(fetches[1]))
    records = sink.on(processor.topics.changelog)
    assert records
    first = {r.partition for r in records[:len(records) // 2]}
    assert first, "this test would prove nothing"
    for record in records:
        stamps = [value for name, value in record.headers or () if name == GENERATION_HEADER]
        assert len(stamps) == 1
        assert stamps[0] in (b"7", b"40")
    later = [r for r in records if r.partition == floor_partition][-1]
    assert (GENERATION_HEADER, b"40") in list(later.headers or ())


async def test_a_raising_fence_sends_no_changelog_and_abandons_the_batch(tmp_path: Path) -> None:
    """When the fence raises, `process` raises `AssignmentLost` before any changelog record
    is sent and leaves the store as it was; called again with a live fence, the batch is
    applied once."""
    sink = MemorySink()
    live = [False]

    def fence() -> int | None:
        if not live[0]:
            raise AssignmentLost("no heartbeat answered")
        return 3

    processor = _processor(tmp_path, sink, fence)
    fetches = fetches_of(journey_lines(tmp_path), processor, processor.topics)
    with pytest.raises(AssignmentLost):
        await processor.process(flat(fetches[0]))
    assert sink.on(processor.topics.changelog) == []
    assert all(processor.store(p) is None or processor.store(p).checkpoint() == -1  # type: ignore[union-attr]
               for p in range(4))
    live[0] = True
    stats = await processor.process(flat(fetches[0]))
    expected_sink = MemorySink()
    expected = _processor(tmp_path / "expected", expected_sink, None)
    reference = await expected.process(flat(fetches[0]))
    assert (stats.processed, stats.duplicates, stats.profiles_written, stats.sent_actions) == (
        reference.processed, reference.duplicates, reference.profiles_written,
        reference.sent_actions)  # (the log redelivers two events: duplicates either way)
    assert profiles(outcome(processor, sink)) == profiles(outcome(expected, expected_sink))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Coordinator:
    """aiokafka's GroupCoordinator as the lease sees it: a generation and a heartbeat call."""

    generation = 7

    async def _do_heartbeat(self) -> bool:
        return True


class _Group:
    """A consumer over fixed per-partition logs that honours `seek`, `pause` and `resume` as
    aiokafka's does; `at_fetch[n]` runs before the n-th `getmany` (from 0). It asks the
    runtime to stop once every log is consumed and nothing is paused."""

    def __init__(self, runtime: KafkaRuntime, logs: dict[Any, list[Message]],
                 lease: GroupLease) -> None:
        self.runtime, self.logs, self.lease = runtime, logs, lease
        self.position = dict.fromkeys(logs, 0)
        self.paused: set[Any] = set()
        self.committed: dict[Any, int] = {}
        self.seeks: list[tuple[Any, int]] = []
        self.stale_commits = 0
        self.fetches = 0
        self.at_fetch: dict[int, Any] = {}
        self._coordinator = _Coordinator()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Message]]:
        hook = self.at_fetch.pop(self.fetches, None)
        self.fetches += 1
        if hook is not None:
            hook()
        out: dict[Any, list[Message]] = {}
        for tp, log in self.logs.items():
            start = self.position[tp]
            if tp not in self.paused and start < len(log):
                out[tp] = log[start:start + 30]
                self.position[tp] += len(out[tp])
        if not out:
            if not self.paused and all(self.position[tp] == len(log)
                                       for tp, log in self.logs.items()):
                self.runtime.stop()
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def commit(self, offsets: dict[Any, int]) -> None:
        if not self.lease.live():
            self.stale_commits += 1
        self.committed |= offsets

    def assignment(self) -> set[Any]:
        return set(self.logs)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    def pause(self, *tps: Any) -> None:
        self.paused.update(tps)

    def resume(self, *tps: Any) -> None:
        self.paused.difference_update(tps)

    def highwater(self, tp: Any) -> int | None:
        return None


@pytest.mark.parametrize("lapse_at", [2, 5])
async def test_a_lapsed_lease_mid_stream_writes_nothing_until_renewed_and_loses_nothing(
        tmp_path: Path, lapse_at: int, caplog: pytest.LogCaptureFixture) -> None:
    """The lease expires while batches are in flight (the worker was paused past half its
    session timeout), and a heartbeat is answered again 0.1 s later: while it is expired no
    changelog record is sent and no offset committed; the batches in flight are abandoned,
    their partitions rewound and fetching paused; after the renewal the worker processes them
    again, and profiles, actions and committed offsets equal a run without the lapse."""
    expected = await sequential(tmp_path, "memory://", journey_lines)
    settings = settings_for(tmp_path / "pipe", "memory://")
    topics = TopicNames.from_settings(settings)
    sink = Broker()
    processor = Processor(settings, topics, load_rulebook(settings.rules), sink,
                          recover=no_recovery)
    runtime = KafkaRuntime(settings, topics, lambda _: processor)
    clock = _Clock()
    lease = GroupLease(settings.session_timeout_ms, clock=clock)
    logs: dict[Any, list[Message]] = {}
    for fetched in fetches_of(journey_lines(tmp_path), processor, topics):
        for message in flat(fetched):
            logs.setdefault(TP(message.topic, message.partition), []).append(message)
    group = _Group(runtime, logs, lease)
    assert lease.attach(group)
    heartbeat = group._coordinator._do_heartbeat  # the lease's wrapper

    def lapse() -> None:
        clock.now += lease.limit_s + 1  # the worker was frozen
        asyncio.get_running_loop().call_later(0.1, asyncio.ensure_future, heartbeat())

    group.at_fetch[lapse_at] = lapse
    stale_sends = []
    send = sink.send

    async def watched_send(topic: str, key: Any, value: Any, **kw: Any) -> Any:
        if topic == topics.changelog and not lease.live():
            stale_sends.append(key)
        return await send(topic, key, value, **kw)

    sink.send = watched_send  # type: ignore[method-assign]

    async def start_clients() -> None:
        runtime._consumer = group
        runtime.processor = processor
        processor.fence = lease.check

    async def keep_stores() -> None:
        """Keep the stores open for the comparison."""

    runtime._start_clients = start_clients  # type: ignore[method-assign]
    runtime._shutdown = keep_stores  # type: ignore[method-assign]
    runtime.lease = lease
    await runtime._on_assigned(set(logs))
    with caplog.at_level(logging.WARNING, logger="service.stream.runtime"):
        await asyncio.wait_for(runtime.run(), 60)
    messages = [r.getMessage() for r in caplog.records]
    assert any("batches in flight abandoned" in m for m in messages), messages
    assert any("fetching paused" in m for m in messages), messages
    assert group.seeks, "the abandoned batches' partitions are rewound"
    assert stale_sends == [] and group.stale_commits == 0
    result = outcome(processor, sink)
    assert profiles(result) == profiles(expected)
    assert values(result, "actions") == values(expected, "actions")
    assert group.committed == {tp: len(log) for tp, log in logs.items()}
    changelog = sink.on(topics.changelog)
    assert changelog and all((GENERATION_HEADER, b"7") in list(r.headers or ())
                             for r in changelog)
