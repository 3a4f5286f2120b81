"""Topic names, and creating the topics a worker needs before it starts consuming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from schemas.vocabulary import CHANNELS
from service.ops.settings import Settings

__all__ = ["TopicNames", "ensure_topics", "topic_partition_counts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic name the service reads or writes, derived from the settings."""

    events: str
    responses: str
    context: str
    actions: str
    decisions: str
    deadletter: str
    repartition: str
    changelog: str
    operations: str = ""
    signal_feed: str = ""
    erasures: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            events=settings.topic("events"),
            responses=settings.topic("responses"),
            context=settings.topic("context"),
            actions=settings.topic("actions"),
            decisions=settings.topic("decisions"),
            deadletter=settings.topic("deadletter"),
            repartition=settings.internal_topic("events-by-profile"),
            changelog=settings.internal_topic("profiles-changelog"),
            operations=settings.topic("operations"),
            signal_feed=settings.internal_topic("signal-feed"),
            erasures=settings.topic("erasures"),
        )

    def channel_actions(self, channel: str) -> str:
        """The per-channel action topic, e.g. ``touchpoints.actions.sms``."""
        return f"{self.actions}.{channel}"

    def all_public(self) -> list[str]:
        names = [self.events, self.responses, self.context, self.actions, self.decisions,
                 self.deadletter]
        if self.operations:
            names.append(self.operations)
        if self.erasures:
            names.append(self.erasures)
        return names + [self.channel_actions(c) for c in sorted(CHANNELS)]


async def topic_partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Partition count of each existing topic among `names` (missing topics are left out)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000,
        **settings.kafka_security(),
    )
    await asyncio.wait_for(admin.start(), 15)
    try:
        # Describe only topics that exist: a metadata request for a missing topic makes a broker
        # with auto-creation (Tansu, many dev clusters) create it with its default partitions.
        present = set(await asyncio.wait_for(admin.list_topics(), 15))
        wanted = [name for name in names if name in present]
        described = await asyncio.wait_for(admin.describe_topics(wanted), 15) if wanted else []
    finally:
        await admin.close()
    out: dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            out[topic["topic"]] = len(topic["partitions"])
    return out


async def ensure_topics(settings: Settings, topics: TopicNames) -> dict[str, int]:
    """Create missing topics (changelog compacted); return each topic's partition count."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    wanted = [*topics.all_public(), topics.repartition, topics.changelog]
    wanted += [name for name in (topics.signal_feed,) if name]
    compacted = {topics.changelog}
    existing = await topic_partition_counts(settings, wanted)
    missing = [name for name in wanted if name not in existing]
    if missing:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000,
            **settings.kafka_security(),
        )
        await asyncio.wait_for(admin.start(), 15)
        try:
            new = [
                NewTopic(
                    name,
                    settings.partitions,
                    settings.replication_factor,
                    topic_configs={"cleanup.policy": "compact"}
                    if name in compacted
                    else {},
                )
                for name in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                await asyncio.wait_for(admin.create_topics(new), settings.broker_timeout_s)
        finally:
            await admin.close()
        log.info("created topics", extra={"topics": missing})
        existing = await topic_partition_counts(settings, wanted)
    for name in (topics.repartition, topics.changelog):
        if existing.get(name) != settings.partitions:
            raise RuntimeError(
                f"topic {name} has {existing.get(name)} partitions but TOUCHFLOW_PARTITIONS="
                f"{settings.partitions}; use the topic's count or a new TOUCHFLOW_APP_ID"
            )
    return existing
