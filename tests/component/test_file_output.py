"""An output that is not Kafka: the processor's actions routed to a JSON-lines file while
everything else stays on the (in-memory) broker give the same actions, audit records,
changelog and stores as the all-broker run."""

from __future__ import annotations

from pathlib import Path

from service.domain.rules import load_rulebook
from service.stream.file_sink import JsonLinesSink
from service.stream.processor import Processor
from service.stream.sink import MemorySink, RoutedSink
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import (
    RULES,
    fetches_of,
    flat,
    journey_lines,
    no_recovery,
    outcome,
    sequential,
    settings_for,
)


async def test_actions_in_a_file_equal_the_actions_on_the_broker(tmp_path: Path) -> None:
    """The journey log (redeliveries, bad lines, an erasure) through a processor whose sink
    routes `<prefix>.actions` to files: the file holds exactly the action records, in order,
    that the all-broker run sent to the actions topic; the broker gets no action and the same
    audit records, dead letters, changelog and stores as before."""
    expected = await sequential(tmp_path, "memory://", journey_lines)
    settings = settings_for(tmp_path / "files", "memory://")
    topics = TopicNames.from_settings(settings)
    broker = MemorySink()
    files = JsonLinesSink(tmp_path / "outputs")
    processor = Processor(settings, topics, load_rulebook(RULES),
                          RoutedSink(broker, {topics.actions: files}), recover=no_recovery)
    for fetched in fetches_of(journey_lines(tmp_path), processor, topics):
        await processor.process(flat(fetched))
    result = outcome(processor, broker)
    assert expected["actions"], "this test would prove nothing"
    assert files.path(topics.actions).read_bytes().splitlines() == [
        value for _, value, _, _ in expected["actions"]]
    assert result["actions"] == []
    for name in ("decisions", "deadletter", "changelog", "stores"):
        assert result[name] == expected[name], name
