"""Fallback launcher of the touchflow pipeline for bench/run.py: the lean Kafka runtime and
the processor, without the worker's metrics and health server.

Used only while ``python -m service worker`` cannot start (the bench row says so); it wires
the same pieces as service/worker.py: settings from TOUCHFLOW_* variables, rulebook, topics,
context table, `KafkaRuntime` + `Processor`; SIGTERM drains and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from service.context import ContextReader
from service.domain.rules import load_rulebook
from service.processor import Processor
from service.runtime import KafkaRuntime
from service.settings import load_settings
from service.sink import KafkaSink
from service.topics import TopicNames, ensure_topics


async def run() -> None:
    """Run the runtime until SIGTERM/SIGINT."""
    settings = load_settings()
    rulebook = load_rulebook(settings.rules)
    topics = TopicNames.from_settings(settings)
    counts = await ensure_topics(settings, topics)
    in_place = counts.get(topics.events) == settings.partitions == counts.get(topics.responses)
    context = ContextReader(settings, topics.context)
    await context.start()

    def make_processor(sink: KafkaSink) -> Processor:
        return Processor(settings, topics, rulebook, sink, context=context.table,
                         in_place=in_place)

    runtime = KafkaRuntime(settings, topics, make_processor)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    try:
        await runtime.run()
    finally:
        await context.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run())


if __name__ == "__main__":
    main()
