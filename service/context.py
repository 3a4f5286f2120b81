"""Reference data from `<prefix>.context`, read by every worker in full (a global table).

Messages are JSON objects ``{"key": "stock:sku-1:store-7", "value": 4}`` (the Kafka key may
carry the key instead); a null value deletes the key. Each worker reads every partition from
the beginning and keeps following it, so all workers see the same reference data. Readiness
waits until the reader has caught up to the high watermark once (Fetch-response high watermark,
not ListOffsets, for the same reason as in recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from schemas.codec import JSONDecodeError, loads
from service.background import Background
from service.settings import Settings

__all__ = ["ContextReader", "apply_context_record"]

log = logging.getLogger(__name__)


def apply_context_record(table: dict[str, Any], key: bytes | None, value: bytes | None) -> bool:
    """Apply one context message to `table`; return False (and change nothing) if malformed."""
    if value is None:
        if key:
            table.pop(key.decode("utf-8", "replace"), None)
            return True
        return False
    try:
        data = loads(value)
    except JSONDecodeError:
        return False
    if isinstance(data, dict) and "key" in data and isinstance(data["key"], str):
        name = data["key"]
        if data.get("value") is None:
            table.pop(name, None)
        else:
            table[name] = data["value"]
        return True
    if key:
        table[key.decode("utf-8", "replace")] = data
        return True
    return False


Apply = Callable[[dict[str, Any], bytes | None, bytes | None], bool]


class ContextReader(Background):
    """Follows a topic from its beginning into `table` until stopped (the context topic by
    default; `apply` says how a record changes the table)."""

    task_name = "touchflow-context"

    def __init__(self, settings: Settings, topic: str, apply: Apply = apply_context_record,
                 label: str = "context") -> None:
        self.settings = settings
        self.topic = topic
        self.label = label
        self.apply = apply
        self.table: dict[str, Any] = {}
        self.caught_up = asyncio.Event()
        self.malformed = 0


    async def wait_loaded(self, warn_every_s: float = 30.0) -> None:
        """Return once the topic was read to its high watermark (a worker must not decide
        before its reference data is there); log a warning every `warn_every_s` meanwhile."""
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self.caught_up.wait()), warn_every_s)
                return
            except TimeoutError:
                log.warning(f"still loading the {self.label} table before deciding")

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_servers,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self.settings.kafka_security(),
            )
            try:
                await asyncio.wait_for(consumer.start(), 30)
                partitions = consumer.partitions_for_topic(self.topic) or {0}
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                while True:
                    batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                    for records in batch.values():
                        for record in records:
                            if not self.apply(self.table, record.key, record.value):
                                self.malformed += 1
                    if not self.caught_up.is_set():
                        done = True
                        for tp in tps:
                            high = consumer.highwater(tp)
                            if high is None or await consumer.position(tp) < high:
                                done = False
                        if done:
                            self.caught_up.set()
                            log.info(f"{self.label} table loaded",
                                     extra={"keys": len(self.table)})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(f"{self.label} reader failed, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(2)
            finally:
                await consumer.stop()
