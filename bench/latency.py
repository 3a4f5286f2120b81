"""Event-to-receipt latency of the real worker at steady rates, and of a bare broker hop.

Where the clock starts: at the event's *scheduled* send time. The load generator works to a
fixed schedule (event n is due at t0 + n / rate, sent in 5 ms slices, one record batch per
partition per slice); each event's start is its due time on this machine's wall clock, so
when the generator itself falls behind, that delay is in the figure too (no coordinated
omission).

Where it stops: when a bench consumer reading the actions topic (fetch wait 10 ms, the
worker's own) has the action in hand, i.e. the wall-clock time at which its `getmany` call
returned the batch holding it. The action is matched to its event by `trigger_event_id`.
Producing the event, the broker, the worker's fetch, decision and shipping (actions, audit,
changelog), the broker again and the consumer's fetch are all inside.

The bare hop is measured the same way with no worker: the same paced events, a consumer with
the same settings on the events topic, stop when it holds the event. It is the host's floor
(a producer, the broker and a consumer on the same machine) under the same load.

Percentiles (p50, p95, p99, max) over every action whose event was due after a warm-up of
3 s (first sends to new topics wait for metadata), by rank (nearest rank, no interpolation).

Where the time goes, from the received record's own timestamp (set by its producer when the
record was appended to a batch): for the worker, due -> stamped is the event's hop, the wait
for its batch and the decisions before it in the batch, stamped -> held the rest of the batch's
decisions, the produce request, the broker and the reader's fetch; for the bare hop, due ->
stamped is the generator's own lateness and stamped -> held the hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FRACTIONS", "acting_ids", "measure_hop", "measure_latency", "measure_relay",
           "percentile", "slices", "summary"]

FRACTIONS = (0.25, 0.50, 0.75)  # of the worker's measured maximum
_WARM_UP_MS = 3000
# A generator further behind its schedule than this measured the host, not the path: the row
# says so (every figure still starts at the due time, so the lag is in them).
_LAG_LIMIT_MS = 50.0
_SLICE_S = 0.005
_FETCH_WAIT_MS = 10  # the worker's own fetch wait (its batch wait)
_IN_FLIGHT_SLICES = 40  # slices shipped and not yet acknowledged, at most (200 ms of load)


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of `values` (share 0.99 -> p99); `values` must not be empty."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def slices(count: int, rate: float, slice_s: float = _SLICE_S) -> list[tuple[int, int, float]]:
    """The generator's schedule: (first index, end index, due offset in seconds) per slice,
    each slice holding `rate * slice_s` events (at least one); event n is due at n / rate."""
    per_slice = max(1, round(rate * slice_s))
    return [(start, min(count, start + per_slice), start / rate)
            for start in range(0, count, per_slice)]


def summary(latencies: Sequence[tuple[float, float]], rate: float, achieved: float,
            count: int, lag_ms: float,
            stamps: Sequence[float] | None = None) -> dict[str, Any]:
    """Percentiles of (event due time ms, latency s) pairs after the warm-up, per-second
    worst cases, the rate asked and achieved and the generator's worst lag behind schedule;
    with `stamps` (per pair, the received record's timestamp, ms), the two legs either side
    of it (module docstring)."""
    first = min(start for start, _ in latencies)
    steady = [value for start, value in latencies if start - first >= _WARM_UP_MS]
    every = [value for _, value in latencies]
    chosen = steady or every

    def ms(value: float) -> float:
        return round(value * 1000, 1)

    legs: dict[str, float] = {}
    if stamps is not None:
        pairs = [(stamp - start, value * 1000 - (stamp - start))
                 for (start, value), stamp in zip(latencies, stamps, strict=True)
                 if start - first >= _WARM_UP_MS or not steady]
        for name, index in (("to_stamp", 0), ("stamp_to_held", 1)):
            values = [pair[index] for pair in pairs]
            for share in (0.50, 0.99):
                legs[f"{name}_p{round(share * 100)}_ms"] = round(percentile(values, share), 1)
    return legs | {
        "ok": True, "rate_target": round(rate), "rate_achieved": round(achieved),
        "events": count, "received": len(chosen), "warm_up_s": _WARM_UP_MS / 1000,
        "p50_ms": ms(percentile(chosen, 0.50)), "p95_ms": ms(percentile(chosen, 0.95)),
        "p99_ms": ms(percentile(chosen, 0.99)), "max_ms": ms(max(chosen)),
        "p99_ms_with_warm_up": ms(percentile(every, 0.99)),
        "generator_lag_max_ms": round(lag_ms, 1),
        "generator_kept_up": lag_ms <= _LAG_LIMIT_MS,
        "slowest_ms_by_second": _slowest_by_second(latencies, first),
    }


def _slowest_by_second(latencies: Sequence[tuple[float, float]], first: float) -> list[float]:
    """The slowest receipt of each second of the run (where the tail comes from)."""
    worst: dict[int, float] = {}
    for start, value in latencies:
        second = int((start - first) // 1000)
        worst[second] = max(worst.get(second, 0.0), value)
    return [round(worst.get(s, 0.0) * 1000) for s in range(max(worst) + 1)]


def _consumer(bootstrap: str, topic: str) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                            enable_auto_commit=False, fetch_max_wait_ms=_FETCH_WAIT_MS)


async def _receive(consumer: Any, done: asyncio.Event, match: Callable[[bytes], float | None],
                   latencies: list[tuple[float, float]], idle_s: float,
                   stamps: list[float]) -> None:
    """Read until the generator is done and nothing came for `idle_s`: each record that
    `match`es (its event's due time, ms) adds (due, receipt - due), and its timestamp to
    `stamps`."""
    idle_since: float | None = None
    while True:
        batch = await consumer.getmany(timeout_ms=200)
        received = time.time() * 1000  # the stopwatch stops here, before any decoding
        got = False
        for records in batch.values():
            for record in records:
                due = match(record.value)
                if due is not None:
                    latencies.append((due, (received - due) / 1000))
                    stamps.append(record.timestamp)
                    got = True
        if done.is_set():
            now = time.monotonic()
            if got or idle_since is None:
                idle_since = now
            elif now - idle_since > idle_s:
                return


async def measure_latency(bootstrap: str, env: Mapping[str, str], prefix: str, cwd: Path,
                          log: Sequence[bytes], keys: Sequence[bytes | None], rate: float,
                          log_path: Path, seconds: float = 20.0) -> dict[str, Any]:
    """Run the worker, feed it `rate` events/s for `seconds`, return receipt-latency figures."""
    from bench.harness import start_worker, stop_process, wait_ready

    count = min(len(log), max(1, int(rate * seconds)))
    ids = [orjson.loads(raw)["event_id"] for raw in log[:count]]
    due: dict[str, float] = {}
    process = start_worker(env, cwd, log_path)
    try:
        await wait_ready(process, log_path, 120)
        return await _fed_and_timed(bootstrap, f"{prefix}.events", f"{prefix}.actions", log,
                                    keys, rate, ids, due, _by_trigger(due), 3.0,
                                    "no actions came back")
    finally:
        stop_process(process, 20)


def _by_trigger(due: Mapping[str, float]) -> Callable[[bytes], float | None]:
    """The due time of the event an action record (or the relay's) answers."""

    def match(value: bytes) -> float | None:
        return due.get(orjson.loads(value).get("trigger_event_id"))

    return match


async def _fed_and_timed(bootstrap: str, topic: str, reader_topic: str, log: Sequence[bytes],
                         keys: Sequence[bytes | None], rate: float, ids: Sequence[str],
                         due: dict[str, float], match: Callable[[bytes], float | None],
                         idle_s: float, nothing: str) -> dict[str, Any]:
    """Feed `log[:len(ids)]` to `topic` at `rate` (`_paced`, filling `due`) while a reader of
    `reader_topic` times each record `match` recognises; the summary, or `nothing` as the
    note when no record came back."""
    from aiokafka import AIOKafkaProducer

    latencies: list[tuple[float, float]] = []
    stamps: list[float] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    consumer = _consumer(bootstrap, reader_topic)
    try:
        await asyncio.wait_for(producer.start(), 20)
        await asyncio.wait_for(consumer.start(), 20)
        done = asyncio.Event()
        reader = asyncio.create_task(_receive(consumer, done, match, latencies, idle_s, stamps))
        achieved, lag = await _paced(producer, topic, log, keys, len(ids), rate, ids, due)
        done.set()
        await asyncio.wait_for(reader, 120)
    finally:
        await _stop_clients(producer, consumer)
    if not latencies:
        return {"ok": False, "note": nothing}
    return summary(latencies, rate, achieved, len(ids), lag, stamps)


async def _stop_clients(*clients: Any) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.stop()


async def _paced(producer: Any, topic: str, log: Sequence[bytes], keys: Sequence[bytes | None],
                 count: int, rate: float, ids: Sequence[str],
                 due: dict[str, float]) -> tuple[float, float]:
    """Produce `count` events at `rate`/s to the schedule of `slices`; `due[event_id]` = its
    due time (wall clock, ms). One record batch per partition per slice (the worker's own
    sink): a per-record `producer.send` cost a third of a core at 13k events/s, taken from
    the worker on a 2-CPU machine. Slices are not held back by earlier slices'
    acknowledgements (until 2026-12-03 evening each slice waited for its own, so one slow
    acknowledgement delayed every later event's send). Returns the rate achieved and the
    worst lag (ms) of a slice's sending behind its due time."""
    from service.stream.sink import BatchingKafkaSink

    sink = BatchingKafkaSink(producer)
    lag = 0.0
    in_flight: deque[asyncio.Future[None]] = deque()
    began = time.monotonic()
    wall = time.time() * 1000 - (time.monotonic() - began) * 1000
    for start, end, offset in slices(count, rate):
        delay = began + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay * 1000)
        stamp = wall + offset * 1000
        for index in range(start, end):
            due[ids[index]] = stamp
            await sink.send(topic, keys[index], log[index])
        # one record batch per partition per slice, shipped without waiting for the broker's
        # acknowledgement (producers do not wait for one another): a slow acknowledgement
        # queues this path's records instead of holding back the whole schedule
        in_flight.append(await sink.ship())
        while len(in_flight) > _IN_FLIGHT_SLICES or (in_flight and in_flight[0].done()):
            await in_flight.popleft()
    for shipment in in_flight:
        await shipment
    return count / (time.monotonic() - began), lag


async def measure_hop(bootstrap: str, topic: str, log: Sequence[bytes],
                      keys: Sequence[bytes | None], rate: float,
                      seconds: float = 20.0) -> dict[str, Any]:
    """The host's floor: the same paced events through one bare hop (producer -> broker ->
    a consumer with the same settings as the actions reader), no worker; the clock as for
    the worker (due time to the consumer holding the record)."""
    count = min(len(log), max(1, int(rate * seconds)))
    ids = [str(n) for n in range(count)]
    by_value: dict[bytes, deque[str]] = {}  # a value sent twice comes back in order (one key)
    for n, value in enumerate(log[:count]):
        by_value.setdefault(value, deque()).append(ids[n])
    due: dict[str, float] = {}

    def match(value: bytes) -> float | None:
        queue = by_value.get(value)
        return due.get(queue.popleft()) if queue else None

    return await _fed_and_timed(bootstrap, topic, topic, log, keys, rate, ids, due, match, 2.0,
                                "no records came back")


def acting_ids(log: Sequence[bytes], rules: Path, partitions: int) -> list[str]:
    """The ids of the events among `log` that the worker answers with an action (replay of
    the same rulebook, in process: deterministic), for the relay to forward."""
    from schemas.event import EventError, decode_event
    from service.domain.rules import load_rulebook
    from service.replay.runner import replay_events

    events = []
    for raw in log:
        try:
            events.append(decode_event(raw))
        except EventError:
            continue
    rulebook = load_rulebook(rules)
    ids: list[str] = []
    for step in replay_events(events, rulebook, partitions=partitions):
        if step.outcome is not None:
            ids.extend(str(action.get("trigger_event_id")) for action in step.outcome.actions)
    return ids


async def measure_relay(bootstrap: str, env: Mapping[str, str], topics: tuple[str, str],
                        log: Sequence[bytes], keys: Sequence[bytes | None], rate: float,
                        acting: Sequence[str], ids_path: Path,
                        seconds: float = 20.0) -> dict[str, Any]:
    """The transport floor of the worker's path (bench/relay.py: the events consumed and the
    acting events' ids produced again, no work between), fed and timed as the worker is:
    due time to a consumer of the relay's output holding the record. `topics`: (events,
    output), both created; `acting`: the ids the worker acts on (`acting_ids`)."""
    import subprocess
    import sys

    count = min(len(log), max(1, int(rate * seconds)))
    ids = [orjson.loads(raw)["event_id"] for raw in log[:count]]
    ids_path.write_text("".join(f"{event_id}\n" for event_id in acting), encoding="utf-8")
    child_env = dict(env) | {"BENCH_BROKER": bootstrap, "BENCH_TOPIC": topics[0],
                             "BENCH_OUT_TOPIC": topics[1], "BENCH_IDS": str(ids_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.relay", env=child_env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    due: dict[str, float] = {}
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            return {"ok": False, "note": "the relay did not start"}
        return await _fed_and_timed(bootstrap, topics[0], topics[1], log, keys, rate, ids, due,
                                    _by_trigger(due), 3.0, "no records came back")
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
