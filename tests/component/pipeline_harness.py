"""A scripted consumer, a broker-like sink and two drivers (one batch at a time through
`Processor.process`, and the lean runtime's pipeline) over the same fetches, for the
pipeline's component tests; and `LoopBack`, one processor fed record by record with its own
repartition records looped back, for the identity, erasure and capacity tests."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.event import EventError, decode_event
from service.domain.rules import load_rulebook
from service.ops.settings import Settings, load_settings
from service.stream.processor import Message, Processor
from service.stream.runtime import KafkaRuntime
from service.stream.sink import MemorySink, Sent
from service.stream.store import PartitionStore
from service.stream.topics import TopicNames
from tests.events import at_minute, wire
from tests.unit.replay.journeys import journey_log

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "default" / "rulebook.yaml"
LEARNING = ROOT / "examples" / "learning"
TP = namedtuple("TP", "topic partition")
BATCH = 120
Fetched = dict[Any, list[Message]]


async def no_recovery(stores: Mapping[int, PartitionStore]) -> None:
    return None


class Broker(MemorySink):
    """A MemorySink whose acknowledgements arrive a little later, as a broker's do, and
    whose `fail_at`-th shipment (counting from 1) is refused: its records are lost (`on()`
    leaves them out) and its future fails."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.shipments = 0
        self.log: list[str] = []
        self._shipped_upto = 0
        self.lost: set[int] = set()

    async def ship(self) -> asyncio.Future[Any]:
        await super().ship()
        self.shipments += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        number = self.shipments
        records = range(self._shipped_upto, len(self.records))
        self._shipped_upto = len(self.records)
        if number == self.fail_at:
            self.lost.update(records)

        def settle() -> None:
            self.log.append(f"ack {number}")
            if number == self.fail_at:
                future.set_exception(OSError("broker refused the batch"))
            else:
                future.set_result(None)

        asyncio.get_running_loop().call_later(0.002, settle)
        return future

    def on(self, topic: str) -> list[Sent]:
        return [r for n, r in enumerate(self.records) if r.topic == topic and n not in self.lost]


class LoopBack:
    """One processor fed one record at a time, as a broker would hand them: `deliver` gives a
    record the next offset of its (topic, partition); `loop_back` and `drain` deliver the
    repartition records the processor sent (forwards, identity and quota records) back to
    it, in the order they were sent."""

    def __init__(self, processor: Processor, sink: MemorySink, topics: TopicNames) -> None:
        self.processor = processor
        self.sink = sink
        self.topics = topics
        self.offsets: dict[tuple[str, int], int] = {}
        self.looped = 0  # repartition records delivered back so far

    @classmethod
    def over(cls, rules: Path, prefix: str, **settings: Any) -> LoopBack:
        """A fresh processor for `rules` (memory store, 4 partitions, no broker, topics
        `<prefix>.*`) over a `MemorySink`."""
        settings_ = load_settings(rules=rules, store="memory://", partitions=4,
                                  broker="kafka://127.0.0.1:1", topic_prefix=prefix, **settings)
        topics = TopicNames.from_settings(settings_)
        sink = MemorySink()
        processor = Processor(settings_, topics, load_rulebook(rules), sink, recover=no_recovery)
        return cls(processor, sink, topics)

    async def deliver(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        """Process one record at the next offset of its partition."""
        slot = (topic, partition)
        self.offsets[slot] = self.offsets.get(slot, -1) + 1
        await self.processor.process([Message(topic, partition, self.offsets[slot], key, value,
                                              headers=headers)])

    def pending(self) -> int:
        """Repartition records sent and not yet delivered back."""
        return len(self.sink.on(self.topics.repartition)) - self.looped

    async def loop_back(self, limit: int, twice: Container[int] = ()) -> None:
        """Deliver the next `limit` repartition records sent so far (not those they cause);
        the n-th record looped back (from 1) twice when n is in `twice`, as a retry would."""
        records = self.sink.on(self.topics.repartition)
        for record in records[self.looped:self.looped + limit]:
            self.looped += 1
            for _ in range(2 if self.looped in twice else 1):
                await self.deliver(self.topics.repartition, record.partition or 0, record.key,
                                   record.value, tuple(record.headers or ()))

    async def drain(self, most: int | None = None) -> None:
        """Loop records back one at a time until none is pending (or after `most` of them)."""
        rounds = 0
        while self.pending() and (most is None or rounds < most):
            await self.loop_back(1)
            rounds += 1


def settings_for(tmp: Path, store: str, rules: Path = RULES) -> Settings:
    return load_settings(rules=rules, store=store, data_dir=tmp, partitions=4,
                         channel_topics=False, broker="kafka://127.0.0.1:1", topic_prefix="pp")


def journey_lines(tmp: Path) -> list[bytes]:
    """The journey log (redeliveries, bad lines, an erasure), plus an erasure ending one
    fetch and the same customer's next events starting the next one: those must not find the
    erased profile in the store, not yet rewritten."""
    lines = journey_log(tmp / "journeys.jsonl").read_bytes().splitlines()
    at = 5 * BATCH - 1
    lines[at:at] = [wire(etype, event_id=f"late-{n}", at=at_minute(n, hour=12, offset="+09:00"),
                         customer="c-9", price=400)
                    for n, etype in enumerate(("erasure_requested", "cart_added", "cart_added"))]
    return lines


def learning_lines(tmp: Path) -> list[bytes]:
    """The learning example's first 2,000 events (responses move the learned tallies)."""
    return (LEARNING / "events.jsonl").read_bytes().splitlines()[:2000]


def fetches_of(lines: list[bytes], processor: Processor, topics: TopicNames) -> list[Fetched]:
    """The lines on the partitions owning each customer, in fetches of 120 records grouped by
    partition, as `getmany` returns them."""
    offsets = [0] * 4
    messages = []
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


def ends(fetches: list[Fetched]) -> dict[Any, int]:
    """The offsets a consumer commits after all of them."""
    out: dict[Any, int] = {}
    for fetched in fetches:
        for tp, records in fetched.items():
            out[tp] = records[-1].offset + 1
    return out


def flat(fetched: Fetched) -> list[Message]:
    return [m for records in fetched.values() for m in records]


def outcome(processor: Processor, sink: MemorySink) -> dict[str, Any]:
    """Everything the batches left behind, per output topic in send order, the stores and
    the learned propensity tallies."""
    topics = processor.topics
    stores = {}
    for partition in range(4):
        store = processor.store(partition)
        if store is not None:
            stores[partition] = ({key: store.get(key) for key in store.keys()},  # noqa: SIM118
                                 store.checkpoint(), store.count())
    topic_of = {"actions": topics.actions, "decisions": topics.decisions,
                "deadletter": topics.deadletter, "changelog": topics.changelog}
    return {name: [(r.key, r.value, r.partition, r.offset) for r in sink.on(topic)]
            for name, topic in topic_of.items() if topic} | {
        "stores": stores,
        "tallies": {p: t.to_bytes() for p, t in processor.learning.items()
                    if t.epochs or t.base}}


def profiles(result: dict[str, Any]) -> dict[int, Any]:
    """The stores' profiles and counts (checkpoints move on when records are sent twice)."""
    return {partition: (values, count)
            for partition, (values, _, count) in result["stores"].items()}


def values(result: dict[str, Any], name: str) -> set[bytes]:
    return {value for _, value, _, _ in result[name]}


async def sequential(tmp: Path, store: str, lines: Callable[[Path], list[bytes]],
                     rules: Path = RULES) -> dict[str, Any]:
    settings = settings_for(tmp / "seq", store, rules)
    topics = TopicNames.from_settings(settings)
    sink = MemorySink()
    processor = Processor(settings, topics, load_rulebook(rules), sink, recover=no_recovery)
    for fetched in fetches_of(lines(tmp), processor, topics):
        await processor.process(flat(fetched))
    return outcome(processor, sink)


class Consumer:
    """Hands the fetches to the runtime, one `getmany` each, and records the commits;
    `before_fetch[n]` runs before the n-th fetch (from 0) is handed out."""

    def __init__(self, runtime: KafkaRuntime, fetches: list[Fetched]) -> None:
        self.runtime = runtime
        self.fetches = fetches
        self.handed = 0
        self.committed: dict[Any, int] = {}
        self.commits = 0
        self.fail_commit_at: int | None = None
        self.before_fetch: dict[int, Callable[[], Any]] = {}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self.handed >= len(self.fetches):
            self.runtime.stop()
            return {}
        hook = self.before_fetch.get(self.handed)
        if hook is not None:
            await hook()
        self.handed += 1
        return self.fetches[self.handed - 1]

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits += 1
        if self.commits == self.fail_commit_at:
            raise TimeoutError("the coordinator did not answer")
        for tp, offset in offsets.items():
            assert offset >= self.committed.get(tp, 0), "a commit went backwards"
        self.committed |= offsets

    def assignment(self) -> set[Any]:
        return set()

    def highwater(self, tp: Any) -> int | None:
        """No Fetch response has told a high watermark (the batches keep their cap)."""
        return None


@dataclass
class Run:
    """A pipelined run: its outcome, and the parts to look at."""

    result: dict[str, Any]
    processor: Processor
    consumer: Consumer
    runtime: KafkaRuntime
    steps: list[str] = field(default_factory=list)


async def pipelined(tmp: Path, store: str, sink: Broker, lines: Callable[[Path], list[bytes]],
                    rules: Path = RULES,
                    prepare: Callable[[KafkaRuntime, Processor, Consumer], None] | None = None
                    ) -> Run:
    """The fetches through the lean runtime's loop (a scripted consumer, no broker)."""
    settings = settings_for(tmp / "pipe", store, rules)
    topics = TopicNames.from_settings(settings)
    processor = Processor(settings, topics, load_rulebook(rules), sink, recover=no_recovery)
    runtime = KafkaRuntime(settings, topics, lambda _: processor)
    consumer = Consumer(runtime, fetches_of(lines(tmp), processor, topics))

    async def start_clients() -> None:
        runtime._consumer = consumer
        runtime.processor = processor

    async def no_shutdown() -> None:
        """Keep the stores open for the comparison."""

    runtime._start_clients = start_clients  # type: ignore[method-assign]
    runtime._shutdown = no_shutdown  # type: ignore[method-assign]
    _record_steps(processor, sink.log)
    if prepare is not None:
        prepare(runtime, processor, consumer)
    await asyncio.wait_for(runtime.run(), 60)
    return Run(outcome(processor, sink), processor, consumer, runtime, sink.log)


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
