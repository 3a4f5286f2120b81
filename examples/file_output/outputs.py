"""A sink factory that sends the actions to files and everything else to Kafka."""

from __future__ import annotations

from schemas.event import CHANNELS
from service.ops.settings import Settings
from service.stream.file_sink import JsonLinesSink
from service.stream.sink import Producer, RoutedSink, Sink, kafka_sink
from service.stream.topics import TopicNames

__all__ = ["actions_to_files"]


def actions_to_files(producer: Producer, settings: Settings) -> Sink:
    """`<prefix>.actions` and `<prefix>.actions.<channel>` to `<data dir>/outputs/<topic>.jsonl`;
    audit records, dead letters, forwards and the changelog to Kafka as usual."""
    topics = TopicNames.from_settings(settings)
    files = JsonLinesSink(settings.data_dir / "outputs")
    routed = [topics.actions, *(topics.channel_actions(channel) for channel in CHANNELS)]
    return RoutedSink(kafka_sink(producer, settings), dict.fromkeys(routed, files))
