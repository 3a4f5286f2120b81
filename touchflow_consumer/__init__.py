"""What a service consuming Touchflow's action topics needs, and nothing else: the action
model, `decode`, a bounded TTL de-duplicator on `action_id` and the trace context of a record.

Standard library only (orjson is used when installed); importing it pulls in neither pydantic,
aiokafka nor the Touchflow service. The wire contract is schemas/jsonschema/action.v1.json.
"""

from touchflow_consumer.action import CHANNELS, Action, ActionError, decode
from touchflow_consumer.dedup import Deduplicator
from touchflow_consumer.trace import trace_id, traceparent

__all__ = [
    "CHANNELS",
    "Action",
    "ActionError",
    "Deduplicator",
    "decode",
    "trace_id",
    "traceparent",
]
