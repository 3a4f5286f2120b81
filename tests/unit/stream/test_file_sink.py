"""The sinks that are not Kafka: `JsonLinesSink` writes a shipment's values as lines only when
it ships (and says so only once they are on disk), and `RoutedSink` sends chosen streams to
another sink and acknowledges a shipment only once every member's is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.stream.file_sink import JsonLinesSink
from service.stream.sink import MemorySink, RoutedSink
from tests.component.pipeline_harness import Broker


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


async def test_values_reach_the_file_when_shipped_in_send_order(tmp_path: Path) -> None:
    """Nothing is written at `send`; `ship()` resolves once the values are in
    `<topic>.jsonl`, one per line, in send order; positions are line numbers."""
    sink = JsonLinesSink(tmp_path / "out")
    first = await sink.send("p.actions", b"c-1", b'{"n":1}')
    second = await sink.send("p.actions", b"c-2", b'{"n":2}')
    other = await sink.send("p.decisions", None, b'{"d":1}')
    assert not sink.path("p.actions").exists()
    await (await sink.ship())
    assert _lines(sink.path("p.actions")) == [b'{"n":1}', b'{"n":2}']
    assert _lines(sink.path("p.decisions")) == [b'{"d":1}']
    assert (await first, await second, await other) == (0, 1, 0)


async def test_discarded_records_are_never_written_and_positions_continue(
        tmp_path: Path) -> None:
    """A discarded (abandoned) batch leaves no line, and the next record takes its
    position; a new sink on the same folder counts on from the lines already there."""
    sink = JsonLinesSink(tmp_path)
    await sink.send("t", None, b"1")
    await sink.flush()
    await sink.send("t", None, b"lost")
    sink.discard()
    again = await sink.send("t", None, b"2")
    await sink.flush()
    assert _lines(sink.path("t")) == [b"1", b"2"] and await again == 1
    later = JsonLinesSink(tmp_path)
    assert await (await later.send("t", None, b"3")) == 2


@pytest.mark.parametrize("value", [None, b'{"a":\n1}'])
async def test_a_value_that_is_not_one_line_is_refused_in_one_sentence(
        tmp_path: Path, value: bytes | None) -> None:
    """A deletion or a multi-line value cannot be a JSON line: refused, naming the stream
    and what may be routed to such a file, before anything is written."""
    sink = JsonLinesSink(tmp_path)
    with pytest.raises(ValueError, match=r"^p\.changelog cannot go to a JSON-lines file: .*\.$"):
        await sink.send("p.changelog", b"k", value)
    await sink.flush()
    assert not sink.path("p.changelog").exists()


async def test_routed_streams_go_to_their_sink_and_the_rest_to_the_default(
        tmp_path: Path) -> None:
    """Actions go to the file, the changelog to the default sink with its partition and
    headers, and positions come from the sink that took the record."""
    default = MemorySink()
    files = JsonLinesSink(tmp_path)
    sink = RoutedSink(default, {"p.actions": files})
    await sink.send("p.changelog", b"k", b"v", partition=3, headers=[("src", b"x")])
    action = await sink.send("p.actions", b"c-1", b'{"a":1}')
    await sink.flush()
    assert [(r.topic, r.partition, r.headers) for r in default.records] == [
        ("p.changelog", 3, [("src", b"x")])]
    assert _lines(files.path("p.actions")) == [b'{"a":1}'] and await action == 0


async def test_a_routed_shipment_fails_when_one_member_loses_records(tmp_path: Path) -> None:
    """The default sink refuses its first shipment: the combined shipment fails (so the
    processor writes no changelog and commits nothing), though the file's lines landed."""
    broker = Broker(fail_at=1)
    files = JsonLinesSink(tmp_path)
    sink = RoutedSink(broker, {"p.actions": files})
    await sink.send("p.decisions", None, b"{}")
    await sink.send("p.actions", None, b"{}")
    shipment = await sink.ship()
    with pytest.raises(OSError, match="broker refused"):
        await asyncio.wait_for(shipment, 5)
    assert _lines(files.path("p.actions")) == [b"{}"]
