"""A Faust user's own agent next to Touchflow's worker: every `call_center` action becomes a
ticket on a CRM topic.

The agent is plain Faust (a stream of the per-channel actions topic, acknowledged by Faust as
it goes); Touchflow's worker runs in the same app, process and consumer group.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["CRM_TOPIC_SUFFIX", "add_crm_forwarder"]

CRM_TOPIC_SUFFIX = "crm.tickets"


def add_crm_forwarder(touchflow: Any) -> None:
    """Add the forwarding agent to `touchflow.app` (a `service.stream.app.Touchflow`): from
    `<prefix>.actions.call_center` to `<prefix>.crm.tickets`, keyed by customer."""
    app = touchflow.app
    prefix = touchflow.settings.topic_prefix
    actions = app.topic(touchflow.topics.channel_actions("call_center"), key_type=bytes,
                        value_type=bytes, key_serializer="raw", value_serializer="raw")
    tickets = app.topic(f"{prefix}.{CRM_TOPIC_SUFFIX}", key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw",
                        partitions=touchflow.settings.partitions)

    async def create_the_tickets_topic() -> None:
        await tickets.declare()

    async def forward_to_crm(stream: Any) -> None:
        """One ticket per call-center action; a redelivered action keeps its `action_id`, so
        the CRM deduplicates on `ticket_id`."""
        async for key, value in stream.items():
            action = orjson.loads(value)
            ticket = {"ticket_id": action["action_id"], "customer_id": action["customer_id"],
                      "subject": action["action"], "payload": action.get("payload", {}),
                      "reasons": action.get("reasons", [])}
            await tickets.send(key=key, value=orjson.dumps(ticket))

    app.task(create_the_tickets_topic)
    app.agent(actions, name="crm.forward")(forward_to_crm)
