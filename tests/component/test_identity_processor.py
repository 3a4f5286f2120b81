"""The worker's processor with identity control records looped back as the broker would:
erasure tombstones the profile and every linked alias in the changelog, and later events
start afresh."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.domain.erasure import key_digest
from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.stream.processor import Message, Processor
from service.stream.sink import MemorySink
from service.stream.store import tombstone_key
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import LoopBack, no_recovery
from tests.events import keyed

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"


def _ms(minute: int) -> int:
    return 1_772_442_000_000 + minute * 60_000


async def test_erasure_tombstones_profile_and_linked_aliases() -> None:
    """Cookie pings, login, erasure: the changelog ends with deletions (None) of both the
    customer and the cookie key and an erasure tombstone for each (by digest, with the
    erasure time), an erasure audit record and one erasures-topic notice naming both
    identifiers are written; a redelivered ping from before the erasure is ignored (audited
    by digest, nothing in the changelog; counted in the erasure and event metrics), and a later
    cookie ping starts a fresh profile with one point."""
    settings = load_settings(rules=RULES, store="memory://", partitions=4,
                             broker="kafka://127.0.0.1:1", topic_prefix="idc")
    topics = TopicNames.from_settings(settings)
    sink = MemorySink()
    from service.ops.metrics import Metrics

    metrics = Metrics()
    processor = Processor(settings, topics, load_rulebook(RULES), sink, recover=no_recovery,
                          metrics=metrics)
    broker = LoopBack(processor, sink, topics)

    async def deliver(raw: bytes) -> None:
        # input partition: anything; forwarded if needed
        await broker.deliver(topics.events, processor.partition_for(b"x"), None, raw)
        await broker.drain()

    await deliver(keyed("p1", "ping", 1, anonymous_id="a-1"))
    await deliver(keyed("p2", "ping", 2, anonymous_id="a-1"))
    await deliver(keyed("login", "identified", 3, customer_id="c-1", anonymous_id="a-1"))
    await deliver(keyed("r1", "report", 4, anonymous_id="a-1"))
    reports = [orjson.loads(r.value) for r in sink.on(topics.actions) if r.value]
    assert [(a["customer_id"], float(a["payload"]["pings"])) for a in reports] == [("c-1", 3.0)]

    await deliver(keyed("bye", "erasure_requested", 5, customer_id="c-1"))
    last: dict[bytes, bytes | None] = {}
    for record in sink.on(topics.changelog):
        assert record.key is not None
        last[record.key] = record.value
    erased_ms = str(_ms(5)).encode()
    assert last == {b"customer_id:c-1": None, b"anonymous_id:a-1": None,
                    tombstone_key(key_digest("customer_id:c-1")): erased_ms,
                    tombstone_key(key_digest("anonymous_id:a-1")): erased_ms}
    audit = [orjson.loads(r.value) for r in sink.on(topics.decisions) if r.value]
    assert [r["kind"] for r in audit if r["kind"] != "action"] == ["merge", "erasure"]
    notices = [orjson.loads(r.value) for r in sink.on(topics.erasures) if r.value]
    assert [[i["field"] for i in n["identifiers"]] for n in notices] == [
        ["customer_id", "anonymous_id"]]

    # a producer's retry of a ping from before the erasure changes nothing and is audited
    await deliver(keyed("p2", "ping", 2, anonymous_id="a-1"))
    ignored = [orjson.loads(r.value) for r in sink.on(topics.decisions)][-1]
    assert (ignored["outcome"], ignored["suppressed_by"]) == ("ignored", "erased")
    assert ignored["customer_id"] == "erased:" + key_digest("anonymous_id:a-1")
    assert sink.on(topics.changelog)[-1].key == tombstone_key(key_digest("anonymous_id:a-1"))
    text = metrics.render().decode()
    assert 'touchflow_erasures_total{outcome="erased"} 1.0' in text
    assert 'touchflow_erasures_total{outcome="ignored"} 1.0' in text
    assert 'outcome="ignored",type="ping"} 1.0' in text
    assert sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("touchflow_erasure_tombstones{")) == 2.0

    await deliver(keyed("p3", "ping", 6, anonymous_id="a-1"))
    await deliver(keyed("r2", "report", 7, anonymous_id="a-1"))
    reports = [orjson.loads(r.value) for r in sink.on(topics.actions) if r.value]
    assert (reports[-1]["customer_id"], float(reports[-1]["payload"]["pings"])) == (
        "anonymous_id:a-1", 2.0)


async def test_rocksdb_profile_count_follows_creations_revisits_and_erasures(
        tmp_path: Path) -> None:
    """The per-partition profile count (the `touchflow_profiles` gauge) stays equal to the keys
    really in the RocksDB stores while profiles are created, revisited from the cache and from
    disk (cache dropped), merged and erased: the processor tells the store which keys existed,
    so the store no longer looks each one up."""
    settings = load_settings(rules=RULES, store="rocksdb://", partitions=2, data_dir=tmp_path,
                             broker="kafka://127.0.0.1:1", topic_prefix="cnt")
    topics = TopicNames.from_settings(settings)
    sink = MemorySink()
    processor = Processor(settings, topics, load_rulebook(RULES), sink, recover=no_recovery)
    broker = LoopBack(processor, sink, topics)

    async def deliver(raw: bytes) -> None:
        await broker.deliver(topics.events, 0, None, raw)

    def counts() -> tuple[int, int]:
        stores = [processor.store(p) for p in (0, 1)]
        counted = sum(s.count() for s in stores if s is not None)
        real = sum(len([k for k in s.keys() if not k.startswith(b"\x00")])  # noqa: SIM118
                   for s in stores if s is not None)
        return counted, real

    for n in range(12):
        await deliver(keyed(f"a{n}", "ping", 1, customer_id=f"c-{n % 6}"))
    await broker.drain()
    assert counts() == (6, 6)
    for partition in (0, 1):  # revisits read from disk, not from the cache
        processor.cache.reset(partition)
    for n in range(6):
        await deliver(keyed(f"b{n}", "ping", 2, customer_id=f"c-{n}"))
    await deliver(keyed("login", "identified", 3, customer_id="c-0", anonymous_id="a-9"))
    await broker.drain()
    assert counts() == (7, 7)  # the alias a-9 holds a redirect now
    await deliver(keyed("bye", "erasure_requested", 4, customer_id="c-0"))
    await broker.drain()
    assert counts() == (5, 5)


async def test_event_metrics_label_unknown_types_other_and_count_duplicates() -> None:
    """Processed and duplicate events are counted per channel and type; a type the rulebook
    does not name is labelled "other" (producers cannot grow the label set), and its
    duplicate is counted as one."""
    from service.ops.metrics import Metrics

    settings = load_settings(rules=RULES, store="memory://", partitions=1,
                             broker="kafka://127.0.0.1:1", topic_prefix="met")
    topics = TopicNames.from_settings(settings)
    metrics = Metrics()
    processor = Processor(settings, topics, load_rulebook(RULES), MemorySink(),
                          recover=no_recovery, metrics=metrics)
    raws = [keyed("m1", "ping", 1, anonymous_id="a-1"),
            keyed("m2", "made_up_type_1", 2, anonymous_id="a-1"),
            keyed("m3", "made_up_type_2", 3, anonymous_id="a-1"),
            keyed("m3", "made_up_type_2", 3, anonymous_id="a-1")]
    await processor.process([Message(topics.events, 0, n, None, raw)
                             for n, raw in enumerate(raws)])
    text = metrics.render().decode()
    assert 'touchflow_events_total{channel="web",outcome="processed",type="ping"} 1.0' in text
    assert 'touchflow_events_total{channel="web",outcome="processed",type="other"} 2.0' in text
    assert 'touchflow_events_total{channel="web",outcome="duplicate",type="other"} 1.0' in text
    assert "made_up_type" not in text


async def test_late_event_is_counted_late_and_audited_by_the_worker() -> None:
    """An event dropped for lateness (more than max_lateness before the customer's newest) is
    counted with outcome="late", not "duplicate", and its `late` audit record is sent to the
    decisions topic, as replay writes it."""
    from service.ops.metrics import Metrics

    settings = load_settings(rules=RULES, store="memory://", partitions=1,
                             broker="kafka://127.0.0.1:1", topic_prefix="lat")
    topics = TopicNames.from_settings(settings)
    metrics = Metrics()
    sink = MemorySink()
    processor = Processor(settings, topics, load_rulebook(RULES), sink,
                          recover=no_recovery, metrics=metrics)
    late = keyed("l0", "ping", at="2026-02-01T09:00:00Z", anonymous_id="a-1")
    raws = [keyed("l1", "ping", 1, anonymous_id="a-1"), late]
    await processor.process([Message(topics.events, 0, n, None, raw)
                             for n, raw in enumerate(raws)])
    text = metrics.render().decode()
    assert 'touchflow_events_total{channel="web",outcome="late",type="ping"} 1.0' in text
    assert 'outcome="duplicate"' not in text
    kinds = [orjson.loads(r.value or b"{}")["kind"] for r in sink.on(topics.decisions)]
    assert kinds.count("late") == 1
