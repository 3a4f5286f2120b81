"""Pipeline 1, the naive Faust app: what a user writes first.

A `faust.Record` model, one agent over the events topic, one Table update per event (memory
store, changelog on), web server off, log level info. Started by bench/run.py as
``python -m bench.naive_faust`` with BENCH_BROKER, BENCH_TOPIC, BENCH_GROUP, BENCH_PARTITIONS.
"""

from __future__ import annotations

import os
from typing import Any

import faust


class Touchpoint(faust.Record, serializer="json"):
    """The wire event, as a Faust model."""

    event_id: str
    occurred_at: str
    channel: str
    type: str
    identity: dict[str, Any]
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


def build_app(bootstrap: str, topic: str, group: str, partitions: int) -> faust.App:
    """The app: agent `process` updates table `profiles` once per event."""
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=partitions,
        broker_session_timeout=8.0,
        broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest",
    )
    events = app.topic(topic, value_type=Touchpoint, partitions=partitions)
    profiles = app.Table("profiles", default=dict, partitions=partitions)

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for event in stream:
            customer = event.identity.get("customer_id") or event.identity.get("anonymous_id")
            profile = profiles[customer]
            profile["events"] = profile.get("events", 0) + 1
            profile["last_channel"] = event.channel
            profile["last_type"] = event.type
            profile["last_seen"] = event.occurred_at
            if event.type == "purchase" and event.properties:
                profile["spend"] = profile.get("spend", 0.0) + event.properties.get("amount", 0)
            profiles[customer] = profile

    return app


def main() -> None:
    """Run the naive app as a Faust worker until SIGTERM."""
    app = build_app(os.environ["BENCH_BROKER"], os.environ["BENCH_TOPIC"],
                    os.environ["BENCH_GROUP"], int(os.environ.get("BENCH_PARTITIONS", "4")))
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
