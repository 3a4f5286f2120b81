"""bench/delay_proxy.py: the relay the benchmark puts in front of the broker to stand for a
network hop delivers every byte, in order, a round trip later."""

from __future__ import annotations

import asyncio
import time

from bench.delay_proxy import DelayProxy
from service.tools.embedded.broker import free_port


async def test_relay_delivers_every_byte_in_order_a_round_trip_later() -> None:
    """An echo server behind a 40 ms relay: 200 chunks written back to back come back
    byte for byte in order, the first reply no sooner than the round trip."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[1]
    proxy = await DelayProxy(free_port(), upstream, rtt_ms=40).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = b"".join(n.to_bytes(4, "big") * 64 for n in range(200))
        started = time.monotonic()
        for start in range(0, len(payload), 256):
            writer.write(payload[start:start + 256])
        await writer.drain()
        first = await reader.readexactly(256)
        waited = time.monotonic() - started
        rest = await asyncio.wait_for(reader.readexactly(len(payload) - 256), 10)
        assert first + rest == payload
        assert waited >= 0.039
        writer.close()
    finally:
        await proxy.stop()
        server.close()
