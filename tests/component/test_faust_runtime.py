"""Component tests of the Faust runtime's consumer (service/stream/faust_runtime.py) over a scripted
Faust consumer (no broker): what it hands the shared pipeline, what it leaves to Faust's own
per-message path, and when it does not fetch; and the shared loop over it, whose offsets are
committed only for batches whose effects are durable."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from pathlib import Path
from typing import Any

from service.domain.rules import load_rulebook
from service.ops.health import Readiness
from service.ops.settings import Settings, load_settings
from service.stream.faust_runtime import FaustConsumer
from service.stream.processor import Processor
from service.stream.runtime import KafkaRuntime
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import Broker, no_recovery
from tests.events import log_line

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"
TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "topic partition offset key value timestamp headers")


class _Thread:
    """Faust's consumer thread: `call_thread` runs the call (here, on this loop)."""

    def __init__(self, fetches: list[dict[Any, list[Any]]]) -> None:
        self.fetches = fetches
        self.fetched = 0
        self.commits: list[dict[Any, int]] = []
        self.seeks: list[tuple[Any, int]] = []
        self.assigned: set[Any] = set()

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        result = fun(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    def _ensure_consumer(self) -> Any:
        return self

    async def _fetch_records(self, consumer: Any, active: set[Any], timeout: float,
                             max_records: int) -> dict[Any, list[Any]]:
        self.fetched += 1
        return self.fetches.pop(0) if self.fetches else {}

    async def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append({(tp.topic, tp.partition): meta.offset
                             for tp, meta in offsets.items()})

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def highwater(self, tp: Any) -> int | None:
        return None

    def assignment(self) -> set[Any]:
        return self.assigned


class _Faust:
    """The parts of a Faust consumer `FaustConsumer` reads: flow, active partitions, the
    conductor's per-message callback and Faust's message wrapper."""

    def __init__(self, thread: _Thread) -> None:
        self._thread = thread
        self.flow_active = True
        self.active: set[Any] = {TP("events", 0)}
        self.delivered: list[tuple[str, int]] = []
        self._read_offset: dict[Any, int] = {}

    def _get_active_partitions(self) -> set[Any]:
        return self.active

    async def callback(self, message: Any) -> None:
        self.delivered.append((message.topic, message.offset))

    def _to_message(self, tp: Any, record: Any) -> Any:
        return record


def _records(topic: str, partition: int, offsets: range) -> list[Rec]:
    return [Rec(topic, partition, n, None, b"{}", 0, ()) for n in offsets]


def _settings(tmp_path: Path) -> Settings:
    """One partition, profiles in memory, a broker address nobody answers (the tests hand
    the runtime their own clients)."""
    return load_settings(rules=RULES, store="memory://", partitions=1,
                         broker="kafka://127.0.0.1:1", topic_prefix="comp",
                         data_dir=str(tmp_path))


def _three_pings(topic: str) -> list[Rec]:
    """Three pings of customer c1 at offsets 0 to 2 of partition 0, a minute apart."""
    values = [log_line(f"e{i}", "c1", "ping", at=f"2026-03-02T09:{i:02d}:00Z") for i in range(3)]
    return [Rec(topic, 0, n, b"customer_id:c1", value, 0, ()) for n, value in enumerate(values)]


def _three_batches(tmp_path: Path, fail_at: int
                   ) -> tuple[Settings, TopicNames, Broker, Processor, _Thread, _Faust]:
    """A processor on one partition whose broker refuses shipment `fail_at`, and Faust's
    consumer (partition 0 active) with three fetches of one ping each."""
    settings = _settings(tmp_path)
    topics = TopicNames.from_settings(settings)
    sink = Broker(fail_at=fail_at)
    processor = Processor(settings, topics, load_rulebook(RULES), sink, recover=no_recovery)
    thread = _Thread([{TP(topics.events, 0): [record]} for record in _three_pings(topics.events)])
    faust = _Faust(thread)
    faust.active = {TP(topics.events, 0)}
    return settings, topics, sink, processor, thread, faust


def _use_clients(runtime: KafkaRuntime, consumer: FaustConsumer, processor: Processor) -> None:
    """Make the runtime start with this consumer and processor instead of connecting."""

    async def start_clients() -> None:
        runtime._consumer = consumer
        runtime.processor = processor

    runtime._start_clients = start_clients  # type: ignore[method-assign]


async def test_touchflow_records_come_capped_and_other_topics_go_to_faust() -> None:
    """One fetch with 5 + 3 records of Touchflow's topics and 2 of a user's topic: the first
    call hands over 4 (the cap) of Touchflow's, the second the other 4 without fetching
    again; the user's records go, in order, to Faust's per-message callback, and one already
    read (before a seek) is skipped, as Faust's own loop does."""
    thread = _Thread([{TP("events", 0): _records("events", 0, range(5)),
                       TP("crm", 0): _records("crm", 0, range(7, 10)),
                       TP("responses", 0): _records("responses", 0, range(3))}])
    faust = _Faust(thread)
    faust._read_offset[TP("crm", 0)] = 8
    consumer = FaustConsumer(faust, {"events", "responses"}, lambda: False)
    first = await consumer.getmany(timeout_ms=1, max_records=4)
    second = await consumer.getmany(timeout_ms=1, max_records=4)
    assert [(r.topic, r.offset) for batch in first.values() for r in batch] == [
        ("events", 0), ("events", 1), ("events", 2), ("events", 3)]
    assert [(r.topic, r.offset) for batch in second.values() for r in batch] == [
        ("events", 4), ("responses", 0), ("responses", 1), ("responses", 2)]
    assert thread.fetched == 1
    assert faust.delivered == [("crm", 8), ("crm", 9)]


async def test_no_fetch_while_faust_flow_is_stopped_or_the_worker_stops() -> None:
    """During a rebalance (Faust's flow stopped), with no active partition, or once the
    worker is stopping, `getmany` fetches nothing: records fetched then would be taken from
    partitions about to move, or never processed."""
    thread = _Thread([{TP("events", 0): _records("events", 0, range(2))}])
    faust = _Faust(thread)
    stopping = False
    consumer = FaustConsumer(faust, {"events"}, lambda: stopping)
    faust.flow_active = False
    assert await consumer.getmany(timeout_ms=1, max_records=10) == {}
    faust.flow_active, faust.active = True, set()
    assert await consumer.getmany(timeout_ms=1, max_records=10) == {}
    faust.active, stopping = {TP("events", 0)}, True
    assert await consumer.getmany(timeout_ms=1, max_records=10) == {}
    assert thread.fetched == 0


async def test_a_seek_drops_the_records_kept_for_that_partition() -> None:
    """Records kept past the cap are dropped when their partition is rewound (a fenced
    worker): the next call fetches again from the position sought, not the stale tail."""
    thread = _Thread([{TP("events", 0): _records("events", 0, range(6))}])
    consumer = FaustConsumer(_Faust(thread), {"events"}, lambda: False)
    await consumer.getmany(timeout_ms=1, max_records=2)
    consumer.seek(TP("events", 0), 0)
    assert await consumer.getmany(timeout_ms=1, max_records=2) == {}
    assert thread.fetched == 2 and [(tp.partition, o) for tp, o in thread.seeks] == [(0, 0)]


async def test_only_batches_whose_effects_are_durable_are_committed(tmp_path: Path) -> None:
    """The shared loop over the Faust consumer: three one-event batches, the broker refusing
    the first one's changelog records. Commits name only offsets past batches whose output and
    changelog were acknowledged, in order, and the refused batch is processed again (its
    actions sent once acknowledged) before its offset is committed; the last commit covers
    every event. Readiness says crashed while the batch fails and recovers once it succeeds."""
    # shipments: 1 batch 1's output, 2 batch 2's output, 3 batch 1's changelog (refused)
    settings, topics, sink, processor, thread, faust = _three_batches(tmp_path, fail_at=3)
    readiness = Readiness()
    readiness.mark_started()
    readiness.mark_assigned({0})
    crashed: list[str] = []
    mark_crashed = readiness.mark_crashed

    def noted(agent: str, reason: str) -> None:
        crashed.append(reason)
        mark_crashed(agent, reason)

    readiness.mark_crashed = noted  # type: ignore[method-assign]
    runtime = KafkaRuntime(settings, topics, lambda _: processor, readiness=readiness)
    _use_clients(runtime, FaustConsumer(faust, {topics.events}, runtime._stopping.is_set),
                 processor)

    async def stop_when_drained() -> None:
        while thread.fetches or runtime._inflight:
            await asyncio.sleep(0.01)
        runtime.stop()

    stopper = asyncio.create_task(stop_when_drained())
    await asyncio.wait_for(runtime.run(), 30)
    await stopper
    committed = [c[(topics.events, 0)] for c in thread.commits]
    assert committed == sorted(committed) and committed[-1] == 3
    assert sink.shipments > 3, "the refused batch was shipped again"
    assert crashed and readiness.crashed == {}, "/readyz 503 while failing, 200 once retried"
    last = sink.on(topics.changelog)[-1]
    assert last.key == b"customer_id:c1" and last.headers is not None
    assert dict(last.headers)["src"].endswith(b":2"), "the last event reached the changelog"


async def test_an_embedding_app_reads_the_profiles_this_worker_owns(tmp_path: Path) -> None:
    """`Touchflow.profile(key)` returns the durable profile of a customer whose partition this
    worker holds (after a batch completed: the pings counted), and None for an unknown
    customer, in place of a Faust table."""
    from service.stream.app import create_app
    from service.stream.sink import MemorySink

    settings = _settings(tmp_path)
    touchflow = create_app(settings, recover=no_recovery)
    touchflow.processor.sink = MemorySink()
    await touchflow.processor.assign({0})
    await touchflow.processor.process(_three_pings(touchflow.topics.events))
    profile = touchflow.profile("customer_id:c1")
    assert profile is not None and profile.cid == "c1" and profile.seen.size() == 3
    assert touchflow.profile("customer_id:nobody") is None


def test_the_runtime_sees_only_touchflows_partitions() -> None:
    """The loop's view of the assignment (lag metric, pausing when fenced, rewinding) holds
    Touchflow's topics only, not Faust's leader topic or the user's agents' topics."""
    thread = _Thread([])
    thread.assigned = {TP("events", 0), TP("app-__assignor-__leader", 0), TP("crm", 1)}
    consumer = FaustConsumer(_Faust(thread), {"events"}, lambda: False)
    assert consumer.assignment() == {TP("events", 0)}


async def test_a_batch_interrupted_at_shutdown_is_not_committed(tmp_path: Path) -> None:
    """The worker is asked to stop (SIGTERM: Faust's `on_before_shutdown`) right after its
    second batch was taken, and the broker refuses that batch's changelog: the drain at
    shutdown abandons it instead of retrying, and the last commit stops before it (the
    restart replays it), where `take_events` would have acknowledged it in its `finally`."""
    # shipments: 1 batch 1's output, 2 batch 2's output, 3 batch 1's changelog, then the
    # drain at shutdown: 4 batch 2's changelog (refused)
    settings, topics, _sink, processor, thread, faust = _three_batches(tmp_path, fail_at=4)
    runtime = KafkaRuntime(settings, topics, lambda _: processor)
    _use_clients(runtime, FaustConsumer(faust, {topics.events}, runtime._stopping.is_set),
                 processor)
    fetch = thread._fetch_records

    async def stop_after_the_second(*args: Any, **kwargs: Any) -> dict[Any, list[Any]]:
        records = await fetch(*args, **kwargs)
        if thread.fetched == 2:
            runtime.stop()
        return records

    thread._fetch_records = stop_after_the_second  # type: ignore[method-assign]
    await asyncio.wait_for(runtime.run(), 30)
    committed = [c[(topics.events, 0)] for c in thread.commits]
    assert committed == [1], committed
    assert thread.fetched == 2, "no batch is taken once the worker is stopping"


def test_a_rebalance_is_not_a_lapsed_lease_but_a_silent_group_is(tmp_path: Path) -> None:
    """No heartbeat answered for longer than the lease: while Faust rebalances (its flow
    stopped; on Tansu the join alone takes half the session timeout) the runtime leaves its
    partitions alone, since Faust pauses and resumes them itself; with Faust's flow running
    (a worker paused past its session timeout) it pauses them until the group answers."""
    from service.stream.faust_runtime import FaustRuntime
    from service.stream.fencing import GroupLease

    settings = _settings(tmp_path)
    topics = TopicNames.from_settings(settings)
    thread = _Thread([])
    thread.assigned = {TP(topics.events, 0)}
    faust = _Faust(thread)
    paused: list[set[Any]] = []
    faust.pause_partitions = lambda tps: paused.append(set(tps))  # type: ignore[attr-defined]

    class _App:
        consumer = faust

    runtime = FaustRuntime(settings, topics, lambda sink: Processor(
        settings, topics, load_rulebook(RULES), sink, recover=no_recovery), _App())
    runtime._consumer = FaustConsumer(faust, {topics.events}, lambda: False)
    now = [0.0]
    runtime.lease = GroupLease(settings.session_timeout_ms, clock=lambda: now[0])
    runtime.lease._coordinator = object()  # attached: it may fence
    runtime.lease.renew()
    runtime._assigned = {TP(topics.events, 0)}
    now[0] = settings.session_timeout_ms / 1000  # past the lease (half of it)
    faust.flow_active = False
    runtime._follow_lease()
    assert paused == []
    faust.flow_active = True
    runtime._follow_lease()
    assert paused == [{TP(topics.events, 0)}]
