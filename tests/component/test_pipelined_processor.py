"""The processor's three steps (begin, send_changelog, complete) overlapped across batches as
the lean runtime runs them, against one batch at a time: the same actions, audit records,
dead letters, changelog and store; and after a failed acknowledgement, the batches in flight
are processed again with no event lost or applied twice."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

import service.processor as processor_module
from schemas.event import EventError, decode_event
from service.domain.rules import load_rulebook
from service.processor import Message, Processor
from service.runtime import KafkaRuntime
from service.settings import Settings, load_settings
from service.sink import MemorySink
from service.store import PartitionStore
from service.topics import TopicNames
from tests.unit.replay.journeys import journey_log

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "default" / "rulebook.yaml"
TP = namedtuple("TP", "topic partition")
BATCH = 120


async def _no_recovery(stores: Mapping[int, PartitionStore]) -> None:
    return None


class _Broker(MemorySink):
    """A MemorySink whose acknowledgements arrive a little later, as a broker's do, and
    whose `fail_at`-th shipment (counting from 1) is refused."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.shipments = 0
        self.log: list[str] = []

    async def ship(self) -> asyncio.Future[Any]:
        await super().ship()
        self.shipments += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failing = self.shipments == self.fail_at
        number = self.shipments

        def settle() -> None:
            self.log.append(f"ack {number}")
            if failing:
                future.set_exception(OSError("broker refused the batch"))
            else:
                future.set_result(None)

        asyncio.get_running_loop().call_later(0.002, settle)
        return future


def _settings(tmp: Path, store: str) -> Settings:
    return load_settings(rules=RULES, store=store, data_dir=tmp, partitions=4,
                         channel_topics=False, broker="kafka://127.0.0.1:1", topic_prefix="pp")


Fetched = dict[TP, list[Message]]


def _batches(tmp: Path, processor: Processor, topics: TopicNames) -> list[Fetched]:
    """The journey log (redeliveries, bad lines, an erasure) on the partitions owning each
    customer, in fetches of 120 records grouped by partition, as `getmany` returns them."""
    offsets = [0] * 4
    messages = []
    lines = journey_log(tmp / "journeys.jsonl").read_bytes().splitlines()
    # an erasure ending one fetch and the same customer's next event starting the next one:
    # the second must not find the erased profile in the store, not yet rewritten
    at = 5 * BATCH - 1
    lines[at:at] = [orjson.dumps({
        "event_id": f"late-{n}", "occurred_at": f"2026-03-02T12:0{n}:00+09:00", "channel": "web",
        "type": etype, "identity": {"customer_id": "c-9"}, "properties": {"price": 400}})
        for n, etype in enumerate(("erasure_requested", "cart_added", "cart_added"))]
    for raw in lines:
        try:
            key: bytes | None = decode_event(raw).key().encode()
        except EventError:
            key = None
        partition = processor.partition_for(key) if key else 0
        messages.append(Message(topics.events, partition, offsets[partition], key, raw, 0))
        offsets[partition] += 1
    fetches = []
    for start in range(0, len(messages), BATCH):
        fetched: Fetched = {}
        for message in messages[start:start + BATCH]:
            fetched.setdefault(TP(message.topic, message.partition), []).append(message)
        fetches.append(fetched)
    return fetches


def _ends(fetches: list[Fetched]) -> dict[TP, int]:
    """The offsets a consumer commits after all of them."""
    ends: dict[TP, int] = {}
    for fetched in fetches:
        for tp, records in fetched.items():
            ends[tp] = records[-1].offset + 1
    return ends


def _outcome(processor: Processor, sink: MemorySink, topics: TopicNames) -> dict[str, Any]:
    """Everything a batch leaves behind, per output topic in send order, and the stores."""
    stores = {}
    for partition in range(4):
        store = processor.store(partition)
        if store is not None:
            stores[partition] = ({key: store.get(key) for key in store.keys()},  # noqa: SIM118
                                 store.checkpoint(), store.count())
    topic_of = {"actions": topics.actions, "decisions": topics.decisions,
                "deadletter": topics.deadletter, "changelog": topics.changelog}
    return {name: [(r.key, r.value, r.partition, r.offset) for r in sink.on(topic)]
            for name, topic in topic_of.items()} | {"stores": stores}


async def _sequential(tmp: Path, store: str) -> dict[str, Any]:
    settings = _settings(tmp / "seq", store)
    topics = TopicNames.from_settings(settings)
    sink = MemorySink()
    processor = Processor(settings, topics, load_rulebook(RULES), sink, recover=_no_recovery)
    for fetched in _batches(tmp, processor, topics):
        await processor.process([m for records in fetched.values() for m in records])
    return _outcome(processor, sink, topics)


class _Consumer:
    """Hands the batches to the runtime, one `getmany` each, and records the commits."""

    def __init__(self, runtime: KafkaRuntime, fetches: list[Fetched]) -> None:
        self.runtime = runtime
        self.batches = list(fetches)
        self.fetches = fetches
        self.committed: dict[Any, int] = {}
        self.commits = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if not self.batches:
            self.runtime.stop()
            return {}
        return self.batches.pop(0)

    async def commit(self, offsets: dict[Any, int]) -> None:
        for tp, offset in offsets.items():
            assert offset >= self.committed.get(tp, 0), "a commit went backwards"
        self.committed |= offsets
        self.commits += 1

    def assignment(self) -> set[Any]:
        return set()


async def _pipelined(tmp: Path, store: str, sink: _Broker
                     ) -> tuple[dict[str, Any], Processor, _Consumer]:
    settings = _settings(tmp / "pipe", store)
    topics = TopicNames.from_settings(settings)
    processor = Processor(settings, topics, load_rulebook(RULES), sink, recover=_no_recovery)
    runtime = KafkaRuntime(settings, topics, lambda _: processor)
    consumer = _Consumer(runtime, _batches(tmp, processor, topics))

    async def start_clients() -> None:
        runtime._consumer = consumer
        runtime.processor = processor

    runtime._start_clients = start_clients  # type: ignore[method-assign]
    runtime._shutdown = _no_shutdown  # type: ignore[method-assign]
    _record_steps(processor, sink.log)
    await asyncio.wait_for(runtime.run(), 60)
    return _outcome(processor, sink, topics), processor, consumer


def _record_steps(processor: Processor, log: list[str]) -> None:
    """Log "begin n" and "complete n" (batches numbered from 1) as the runtime calls them."""
    begin, complete = processor.begin, processor.complete
    numbers: dict[int, int] = {}

    async def logged_begin(messages: Any) -> Any:
        batch = await begin(messages)
        numbers[id(batch)] = len(numbers) + 1
        log.append(f"begin {numbers[id(batch)]}")
        return batch

    async def logged_complete(batch: Any) -> Any:
        stats = await complete(batch)
        log.append(f"complete {numbers[id(batch)]}")
        return stats

    processor.begin = logged_begin  # type: ignore[method-assign]
    processor.complete = logged_complete  # type: ignore[method-assign]


async def _no_shutdown() -> None:
    """Keep the stores open for the comparison."""


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
@pytest.mark.parametrize("cache_limit", [200_000, 3])
async def test_overlapped_batches_leave_what_one_at_a_time_leaves(
    tmp_path: Path, store: str, cache_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's pipeline (a batch begun while the one before waits for its changelog's
    acknowledgement) sends the same records to every topic, in the same order per topic, and
    leaves the same profiles, checkpoints and counts as `process()` one batch at a time; also
    with a cache of three profiles, so eviction meets profiles not yet in the store (an
    erasure among them)."""
    monkeypatch.setattr(processor_module, "_CACHE_LIMIT", cache_limit)
    expected = await _sequential(tmp_path, store)
    sink = _Broker()
    got, _, consumer = await _pipelined(tmp_path, store, sink)
    assert expected["actions"] and expected["deadletter"], "this test would prove nothing"
    assert got == expected
    # the batches did overlap: one began before the one before it was complete
    steps = sink.log
    assert any(steps.index(f"begin {n + 1}") < steps.index(f"complete {n}")
               for n in range(1, len(consumer.fetches)))
    assert consumer.commits == len(consumer.fetches)
    assert consumer.committed == _ends(consumer.fetches)


def _profiles(outcome: dict[str, Any]) -> dict[int, Any]:
    """The stores' profiles and counts (checkpoints move on when records are sent twice)."""
    return {partition: (values, count)
            for partition, (values, _, count) in outcome["stores"].items()}


@pytest.mark.parametrize("fail_at", [3, 8, 9, 20])
async def test_a_refused_batch_in_flight_is_processed_again_without_loss_or_double_count(
    tmp_path: Path, fail_at: int
) -> None:
    """The broker refuses one shipment (a batch's actions or its changelog) while later
    batches are in flight: the runtime abandons them all and processes them again, so every
    action is delivered (some twice: at-least-once), the profiles end exactly as without the
    failure (no event lost, none applied twice) and every offset is committed, in order."""
    expected = await _sequential(tmp_path, "rocksdb://")
    sink = _Broker(fail_at=fail_at)
    got, _, consumer = await _pipelined(tmp_path, "rocksdb://", sink)
    assert f"ack {fail_at}" in sink.log
    assert _profiles(got) == _profiles(expected)
    assert len(got["actions"]) > len(expected["actions"])  # the refused batch's, again
    assert {value for _, value, _, _ in got["actions"]} == {
        value for _, value, _, _ in expected["actions"]}
    assert consumer.committed == _ends(consumer.fetches)


async def test_process_called_again_after_a_refused_flush_applies_the_batch_once(
    tmp_path: Path,
) -> None:
    """`process()` that raised (its output refused) leaves no trace in the processor's
    memory: called again with the same messages, as the Faust agent and the runtime's retry
    do, it sends the batch's actions and changelog and the store ends as without the failure
    (before, the cached profiles kept the failed batch's events and the retry skipped them
    as duplicates)."""
    expected = await _sequential(tmp_path, "memory://")
    settings = _settings(tmp_path / "retry", "memory://")
    topics = TopicNames.from_settings(settings)
    sink = _Broker(fail_at=5)
    processor = Processor(settings, topics, load_rulebook(RULES), sink, recover=_no_recovery)
    failures = 0
    for fetched in _batches(tmp_path, processor, topics):
        messages = [m for records in fetched.values() for m in records]
        try:
            await processor.process(messages)
        except OSError:
            failures += 1
            await processor.process(messages)
    assert failures == 1
    got = _outcome(processor, sink, topics)
    assert _profiles(got) == _profiles(expected)
    assert {value for _, value, _, _ in got["actions"]} == {
        value for _, value, _, _ in expected["actions"]}
