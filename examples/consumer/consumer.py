"""An example service consuming Touchflow's actions: reads `<prefix>.actions` (or one
channel's topic) with aiokafka, skips repeats by `action_id`, drops expired actions, and
prints one JSON line per action it handles, with the trace id the event came with.

    python examples/consumer/consumer.py --bootstrap 127.0.0.1:9092 --topic touchpoints.actions

Offsets are committed after each batch is handled: a crash re-reads at most that batch, and the
de-duplicator absorbs what Touchflow itself delivers twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from touchflow_consumer import Action, ActionError, Deduplicator, decode, trace_id


def handle(action: Action, trace: str | None) -> None:
    """What the real service would do (show the offer, queue the call...): here, print it."""
    print(json.dumps({"handled": action.action_id, "action": action.action,
                      "channel": action.channel, "trace_id": trace}), flush=True)


async def consume(args: argparse.Namespace) -> dict[str, int]:
    seen = Deduplicator(ttl_s=args.ttl_s, max_entries=args.max_entries)
    counts = {"received": 0, "handled": 0, "duplicates": 0, "expired": 0, "invalid": 0}
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await asyncio.wait_for(consumer.start(), 30)
    deadline = time.monotonic() + args.timeout_s
    try:
        while time.monotonic() < deadline and counts["received"] < args.max_messages:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    counts["received"] += 1
                    try:
                        action = decode(record.value or b"")
                    except ActionError as error:  # not ours to fix: count it, go on
                        counts["invalid"] += 1
                        print(json.dumps({"invalid": str(error)}), file=sys.stderr)
                        continue
                    if not seen.first(action.action_id):
                        counts["duplicates"] += 1
                        continue
                    if not args.keep_expired and action.expired(datetime.now(UTC)):
                        counts["expired"] += 1
                        continue
                    counts["handled"] += 1
                    handle(action, trace_id(record.headers))
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="touchpoints.actions")
    parser.add_argument("--group", default="example-consumer")
    parser.add_argument("--ttl-s", type=float, default=86_400.0,
                        help="remember an action_id this long (at least the actions' lifetime)")
    parser.add_argument("--max-entries", type=int, default=100_000)
    parser.add_argument("--keep-expired", action="store_true",
                        help="handle actions past their expires_at too (replayed old logs)")
    parser.add_argument("--max-messages", type=int, default=sys.maxsize,
                        help="stop after this many records (tests)")
    parser.add_argument("--timeout-s", type=float, default=float("inf"),
                        help="stop after this many seconds (tests)")
    args = parser.parse_args(argv)
    try:
        counts = asyncio.run(consume(args))
    except KeyboardInterrupt:
        return 0
    print(json.dumps({"summary": counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
