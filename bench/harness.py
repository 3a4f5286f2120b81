"""Shared pieces of the benchmarks: topics, pre-producing, a committed-offset stopwatch.

Every pipeline is measured the same way: its events are produced to its own fresh topic
first, then the pipeline starts as a subprocess in its own consumer group, and we watch that
group's committed offsets on the topic (every 0.1 s). The clock runs from the first movement
of the committed offsets (so start-up and group join are excluded) until every produced event
is committed; the events counted are those committed in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Measurement", "create_topic", "is_ready", "measure_subprocess", "produce_log",
    "start_worker", "stop_process", "wait_ready", "watch_commits",
]

_PROGRESS = os.environ.get("BENCH_PROGRESS") == "1"  # per-second rates on stderr
POLL_S = 0.1
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Measurement:
    """One pipeline's result: events committed in the timed window and how long it took."""

    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float | None = None
    note: str = ""
    ok: bool = False
    exited_early: bool = False  # the process ended before committing anything
    log_tail: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.ok and self.seconds > 0 else 0.0


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic with `partitions` partitions (it must not exist yet)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    await asyncio.wait_for(admin.start(), 20)
    try:
        await asyncio.wait_for(admin.create_topics([NewTopic(topic, partitions, 1)]), 30)
    finally:
        await asyncio.wait_for(admin.close(), 10)


async def produce_log(bootstrap: str, topic: str, values: Sequence[bytes],
                      keys: Sequence[bytes | None]) -> float:
    """Send every value (with its key) and wait for all acks; return the seconds it took.
    Records go out as one batch per partition per 5,000 (the worker's own sink), so the
    producing process stays light when it shares the machine with what it feeds."""
    from aiokafka import AIOKafkaProducer

    from service.stream.sink import BatchingKafkaSink

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await asyncio.wait_for(producer.start(), 20)
    began = time.perf_counter()
    try:
        async with asyncio.timeout(max(60.0, len(values) / 2000)):
            await producer.partitions_for(topic)  # metadata first: the sink batches at once
            sink = BatchingKafkaSink(producer)
            for start in range(0, len(values), 5000):
                for index in range(start, min(len(values), start + 5000)):
                    await sink.send(topic, keys[index], values[index])
                await sink.flush()
    finally:
        await asyncio.wait_for(producer.stop(), 30)
    return time.perf_counter() - began


def start_worker(env: Mapping[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m service worker` in its own session, output appended to `log_path`."""
    with open(log_path, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "service", "worker"], env=dict(env),
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def is_ready(base: str) -> bool:
    """True if the worker serving `base` answers /readyz with 200."""
    with contextlib.suppress(OSError), \
            urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
        return bool(response.status == 200)
    return False


async def wait_ready(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str:
    """Wait until the worker's /readyz answers 200; return its HTTP base URL."""
    deadline = time.monotonic() + timeout
    base = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        if base is None:
            found = re.search(r"metrics and health on (http://[0-9.:]+)/metrics",
                              log_path.read_text(errors="replace"))
            base = found.group(1) if found else None
        if base is not None and is_ready(base):
            return base
        await asyncio.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout:.0f}s")


async def _committed(watcher: Any, partitions: list[Any]) -> int:
    # OffsetFetch through a group member that never joins (the admin client's
    # ListConsumerGroupOffsets does not parse Tansu's answer).
    total = 0
    for tp in partitions:
        offset = await asyncio.wait_for(watcher.committed(tp), 10)
        total += max(offset or 0, 0)
    return total


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM (the worker drains and commits), SIGKILL after `grace_s`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _tail(path: Path, lines: int = 12) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


async def watch_commits(
    processes: Sequence[subprocess.Popen[bytes]], *, bootstrap: str, group: str, topic: str,
    partitions: int, total: int, timeout_s: float, poll_s: float = POLL_S,
) -> Measurement:
    """Poll `group`'s committed offsets on `topic` until `total` are committed: the window
    runs from their first movement, CPU is the processes' sum over it. Stops nothing."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    def cpu_now() -> float | None:
        seconds = [_cpu_seconds(p.pid) for p in processes]
        return None if None in seconds else sum(s for s in seconds if s is not None)

    result = Measurement()
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                               enable_auto_commit=False, request_timeout_ms=10_000)
    await asyncio.wait_for(watcher.start(), 20)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    began = time.monotonic()
    first: tuple[float, int, float | None] | None = None
    shown = (time.monotonic(), 0)
    try:
        while True:
            await asyncio.sleep(poll_s)
            now = time.monotonic()
            ended = next((p for p in processes if p.poll() is not None), None)
            if ended is not None:
                result.note = f"exited with code {ended.returncode} before finishing"
                result.exited_early = first is None
                break
            try:
                committed = await _committed(watcher, tps)
            except Exception as exc:  # the group may not exist yet
                committed = 0
                if now - began > timeout_s:
                    result.note = f"offsets unreadable: {type(exc).__name__}"
                    break
            if first is None and committed > 0:
                first = (now, committed, cpu_now())
            if first is not None and _PROGRESS and now - shown[0] >= 1.0:
                print(f"    {now - first[0]:6.1f} s  {committed:>9,}  "
                      f"{(committed - shown[1]) / (now - shown[0]):>9,.0f} events/s",
                      file=sys.stderr, flush=True)
                shown = (now, committed)
            if first is not None and committed >= total:
                result.ok = True
                result.events = committed - first[1]
                result.seconds = now - first[0]
                cpu = cpu_now()
                if cpu is not None and first[2] is not None:
                    result.cpu_seconds = cpu - first[2]
                if result.events < total // 2:
                    result.note = "most events were committed before the first poll"
                elif result.seconds < 20 * poll_s:
                    share = 100 * poll_s / max(result.seconds, poll_s)
                    result.note = f"short window: +/-{share:.0f}% (use more --events)"
                break
            if now - began > timeout_s:
                result.note = (f"timed out after {timeout_s:.0f}s with {committed}/{total} "
                               "committed")
                break
    finally:
        await asyncio.wait_for(watcher.stop(), 10)
    return result


async def measure_subprocess(
    command: Sequence[str], env: Mapping[str, str], *, bootstrap: str, group: str, topic: str,
    partitions: int, total: int, log_path: Path, timeout_s: float, cwd: Path,
    poll_s: float = POLL_S,
) -> Measurement:
    """Start `command`, time it from the first committed-offset movement to `total` committed,
    then stop it with SIGTERM (SIGKILL after 20 s)."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(list(command), env=dict(env), cwd=cwd, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        result = await watch_commits([process], bootstrap=bootstrap, group=group, topic=topic,
                                     partitions=partitions, total=total, timeout_s=timeout_s,
                                     poll_s=poll_s)
    finally:
        stop_process(process)
    if not result.ok:
        result.log_tail = _tail(log_path)
    return result
