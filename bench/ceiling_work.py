"""The per-event work every ceiling row does, whatever its Kafka client: decode the event,
update the customer's dict, encode the dict as the record to produce."""

from __future__ import annotations

from typing import Any

import orjson


def touch_profile(profiles: dict[str, dict[str, Any]], value: bytes) -> bytes:
    """Apply one raw event to its customer's dict in `profiles`; return the dict encoded."""
    event = orjson.loads(value)
    identity = event["identity"]
    customer = identity.get("customer_id") or identity.get("anonymous_id")
    profile = profiles.get(customer)
    if profile is None:
        profile = profiles[customer] = {"events": 0}
    profile["events"] += 1
    profile["last_type"] = event["type"]
    profile["last_seen"] = event["occurred_at"]
    return orjson.dumps(profile)
