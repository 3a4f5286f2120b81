"""`JsonLinesSink`: a sink that appends each record's value as one line to `<topic>.jsonl` in
a folder, durable once written and synced to disk.

An output that is not Kafka (service/stream/sink.py says what a sink must do): route to it
the streams whose values are one-line JSON objects, i.e. actions, per-channel copies, audit
records, dead letters or erasure notices (`RoutedSink`). A deletion (a changelog tombstone)
or a value holding a line break cannot be a line and is refused; the changelog and the
forwards stay on Kafka, where recovery and the other partitions read them.

A record's position is its line number in its file (from 0), counting the lines the file
held when the sink first wrote to it. Lines are written in send order, one shipment after
the other; a crash may leave the last shipment's lines written and its batch processed
again, so a reader deduplicates actions on `action_id`, as on Kafka.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path

from service.stream.sink import Headers, Shipment, _retrieve

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    """Appends values to `<folder>/<topic>.jsonl` (the folder is created)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._pending: dict[str, list[bytes]] = {}  # sent, not shipped, by topic
        self._next: dict[str, int] = {}  # the next record's line number, by topic
        self._last: asyncio.Future[None] | None = None  # the newest shipment's write

    def path(self, topic: str) -> Path:
        """The file of one stream."""
        return self.folder / f"{topic}.jsonl"

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        if value is None or b"\n" in value or b"\r" in value:
            raise ValueError(f"{topic} cannot go to a JSON-lines file: its records must be "
                             "one-line values (route only actions, audit records, dead "
                             "letters and erasure notices there).")
        line = self._next.get(topic)
        if line is None:
            line = await asyncio.to_thread(_lines_in, self.path(topic))
        self._next[topic] = line + 1
        self._pending.setdefault(topic, []).append(value)
        position: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        position.set_result(line)  # (awaited only once its shipment is durable)
        return position

    async def ship(self) -> Shipment:
        pending, self._pending = self._pending, {}
        previous = self._last
        written = asyncio.ensure_future(self._write(previous, pending))
        written.add_done_callback(_retrieve)  # (a failure nobody awaits is not logged twice)
        self._last = written
        return written

    async def _write(self, previous: asyncio.Future[None] | None,
                     pending: dict[str, list[bytes]]) -> None:
        if previous is not None:  # shipments reach the files in order (a failed one too)
            await asyncio.wait([previous])
        if pending:
            await asyncio.to_thread(self._append, pending)

    def _append(self, pending: dict[str, list[bytes]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for topic, values in pending.items():
            with open(self.path(topic), "ab") as file:
                file.write(b"\n".join(values) + b"\n")
                file.flush()
                os.fsync(file.fileno())

    async def flush(self) -> None:
        await (await self.ship())

    def discard(self) -> None:
        for topic, values in self._pending.items():
            self._next[topic] -= len(values)
        self._pending = {}


def _lines_in(path: Path) -> int:
    """How many lines a file holds (0 when it does not exist)."""
    try:
        with open(path, "rb") as file:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    except FileNotFoundError:
        return 0
