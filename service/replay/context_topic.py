"""Reference data for replay read from `<prefix>.context`, as the worker reads it.

Every partition is read from its beginning up to the high watermark that the first Fetch
response reported (`consumer.highwater(tp)`; ListOffsets(latest) is not trusted: the embedded
Tansu broker answers it wrongly, see docs/decisions.md), so a topic that keeps growing still gives a
bounded read. Records apply with the worker's semantics (`apply_context_record`), the record
timestamp standing in for a missing `valid_from`, so replay reads the versions the worker read.
"""

from __future__ import annotations

import asyncio
import threading

from service.domain.context_table import ContextTable
from service.ops.settings import Settings
from service.replay.reader import CONTEXT_SHAPE, BadRecord, OnBad, ReplayInputError
from service.replay.topic import AiokafkaConsumer, assign_topics, open_consumer
from service.stream.consumer import TopicPartition
from service.stream.context import apply_context_record, record_time

__all__ = ["load_context_topic", "read_context_topic"]

_STALL_S = 30.0  # no record and no high watermark for this long: the read gives up


def load_context_topic(settings: Settings, topic: str, on_bad: OnBad | None = None,
                       stall_s: float = _STALL_S) -> ContextTable:
    """`read_context_topic` for synchronous callers (the replay command), on its own thread
    and event loop so that it also works where a loop is already running."""
    outcome: list[ContextTable | BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(read_context_topic(settings, topic, on_bad, stall_s)))
        except BaseException as exc:  # handed to the calling thread
            outcome.append(exc)

    thread = threading.Thread(target=run, name="touchflow-replay-context", daemon=True)
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


async def read_context_topic(settings: Settings, topic: str, on_bad: OnBad | None = None,
                             stall_s: float = _STALL_S) -> ContextTable:
    """Every record of `topic` up to its high watermark, applied to a new `ContextTable`."""
    consumer = await open_consumer(settings)
    try:
        tps = await assign_topics(consumer, [topic], settings)
        await consumer.seek_to_beginning(*tps)
        table = ContextTable()
        await _read(consumer, set(tps), table, on_bad, stall_s)
        return table
    except ReplayInputError:
        raise
    except Exception as exc:
        raise ReplayInputError(
            f"reading {topic} from {settings.broker} failed: {exc!r}") from None
    finally:
        await consumer.stop()


async def _read(consumer: AiokafkaConsumer, pending: set[TopicPartition], table: ContextTable,
                on_bad: OnBad | None, stall_s: float) -> None:
    """Apply records until every partition in `pending` reached its first high watermark."""
    loop = asyncio.get_running_loop()
    targets: dict[TopicPartition, int] = {}
    last_progress = loop.time()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=300, max_records=5000)
        progressed = bool(batch)
        for tp, records in batch.items():
            for record in records:
                target = targets.get(tp)
                if target is not None and record.offset >= target:
                    break  # written after the read started: not part of this run
                if not apply_context_record(table, record.key, record.value,
                                            record_time(record.timestamp)) and on_bad:
                    on_bad(BadRecord(f"{tp.topic}/{tp.partition}@{record.offset}",
                                     "bad_context", CONTEXT_SHAPE))
        for tp in list(pending):
            high = consumer.highwater(tp)
            if high is not None and tp not in targets:
                targets[tp] = high
                progressed = True
            if tp in targets and await consumer.position(tp) >= targets[tp]:
                pending.discard(tp)
        now = loop.time()
        if progressed:
            last_progress = now
        elif now - last_progress > stall_s:
            raise ReplayInputError(
                f"reading the context topic stalled for {stall_s:.0f} s with "
                f"{len(pending)} partition(s) short of their high watermark")
