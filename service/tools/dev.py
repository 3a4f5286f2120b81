"""`touchflow dev` / `make run`: everything on one machine, for a first look.

Starts the embedded broker on a free port, one worker (RocksDB in a fresh temporary directory,
since the embedded broker forgets everything when it stops), the event simulator, and the
metrics endpoint; prints where each is, then one readable line per action as it is decided.
Ctrl-C stops all of it and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import tempfile
import time
from typing import Any

from schemas.codec import loads

__all__ = ["format_action", "run_dev"]


def format_action(action: dict[str, Any]) -> str:
    """One live line: time, customer, action -> channel, top reason."""
    reasons = action.get("reasons") or ["-"]
    return (
        f"{time.strftime('%H:%M:%S')}  {str(action.get('customer_id', '?'))[:30]:<30} "
        f"{action.get('action', '?'):<22} -> {action.get('channel', '?'):<12} "
        f"score {action.get('score', 0):>6.1f}  because {reasons[0]}"
    )


async def _print_actions(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), 30)
    try:
        async for record in consumer:
            with contextlib.suppress(Exception):
                print(format_action(loads(record.value)), flush=True)
    finally:
        await consumer.stop()


def run_dev(*, rate: float, customers: int, seed: int, metrics_port: int) -> int:
    """Run broker + worker + simulator + live action lines until Ctrl-C."""
    from service.ops.logs import configure_logging
    from service.ops.settings import load_settings, warn_unknown_variables
    from service.stream.worker import run_worker
    from service.tools.embedded import EmbeddedBroker
    from service.tools.simulator import simulate

    broker = EmbeddedBroker()
    broker.start()  # (first: without the embedded extra it stops here, leaving nothing)
    data_dir = tempfile.mkdtemp(prefix="touchflow-dev-")
    try:
        defaults = {
            "TOUCHFLOW_BROKER": broker.url,
            "TOUCHFLOW_DATA_DIR": data_dir,
            "TOUCHFLOW_METRICS_PORT": str(metrics_port),
            "TOUCHFLOW_METRICS_HOST": "127.0.0.1",
            "TOUCHFLOW_LOG_FORMAT": "console",
            "TOUCHFLOW_SESSION_TIMEOUT_MS": "6000",
            "TOUCHFLOW_PARTITIONS": os.environ.get("TOUCHFLOW_PARTITIONS", "4"),
            # One worker on an in-memory broker: a salt of this session's own is all the
            # dead letters' digests need (production sets one for all workers).
            "TOUCHFLOW_PII_SALT": secrets.token_hex(16),
        }
        for name, value in defaults.items():
            if name == "TOUCHFLOW_BROKER" or name not in os.environ:
                os.environ[name] = value
        settings = load_settings()
        configure_logging("warning", "console")
        warn_unknown_variables(logging.getLogger("service.tools.dev"), os.environ)
        print(
            "touchflow dev\n"
            f"  broker   {broker.url} (embedded Tansu, in memory)\n"
            f"  rules    {settings.rules}\n"
            f"  state    {settings.data_dir} ({settings.store})\n"
            f"  metrics  http://127.0.0.1:{metrics_port}/metrics   "
            f"health /healthz /readyz\n"
            f"  topics   {settings.topic('events')} -> {settings.topic('actions')}\n"
            f"  traffic  {rate:g} events/s from {customers} simulated customers (seed {seed})\n"
            "  Ctrl-C stops everything. Actions appear below as they are decided "
            "(the first after ~10 s):\n",
            flush=True,
        )

        async def traffic() -> None:
            await asyncio.sleep(1.0)
            await simulate(settings.bootstrap_servers, settings.topic("events"), rate=rate,
                           seed=seed, customers=customers, limit=None)

        async def live() -> None:
            await _print_actions(settings.bootstrap_servers, settings.topic("actions"))

        return run_worker(settings, tasks=(traffic, live))
    finally:
        broker.stop()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
        print("touchflow dev stopped.", file=sys.stderr)
