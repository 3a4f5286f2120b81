"""A TCP relay that adds a fixed delay each way, to run a benchmark as if the broker were a
network hop away (`python -m bench --broker-rtt-ms 4`).

The embedded broker runs on one machine with the worker, so its acknowledgements come back
in well under a millisecond; a production cluster's come back after the network round trip
and, with `acks=all`, the replication to the other brokers: a few milliseconds. The broker
advertises the relay's port, so every client connection (bootstrap and after) goes through
it. Bytes keep their order: each direction is a queue of (due time, chunk) written by one
task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["DelayProxy"]

_CHUNK = 256 * 1024


class DelayProxy:
    """Listens on 127.0.0.1:`port`, relays to 127.0.0.1:`upstream_port`, `rtt_ms` / 2 late
    each way."""

    def __init__(self, port: int, upstream_port: int, rtt_ms: float) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.delay_s = rtt_ms / 2000
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        for reader, writer in ((client_r, broker_w), (broker_r, client_w)):
            task = asyncio.ensure_future(self._pump(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: deque[tuple[float, bytes]] = deque()
        ready = asyncio.Event()
        done = False

        async def deliver() -> None:
            while queue or not done:
                if not queue:
                    ready.clear()
                    await ready.wait()
                    continue
                due, chunk = queue[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                queue.popleft()
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(_CHUNK):
                queue.append((loop.time() + self.delay_s, chunk))
                ready.set()
            done = True
            ready.set()
            await sender
        finally:
            sender.cancel()
            writer.close()
