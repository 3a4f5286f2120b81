"""No identifier or personal value at any log level: decode, dead-lettering and the worker's
processor (identity links, a refused link, erasure, the hostile corpus) run with logging at
DEBUG, and neither the log lines (message and fields) nor the dead-letter topic hold a byte
of a customer's identifiers or of the personal data the events carried."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from service.ops.logs import JsonFormatter
from tests.component.pipeline_harness import LoopBack
from tests.events import at_minute, event_dict, keyed
from tests.pii_corpus import HOSTILE

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"
#: Fragments of every identifier and personal value the events below carry.
SECRETS = ("c-secret", "a-secret", "l-secret", "jane", "doe@", "2671", "0958", "6789",
           "56 78", "5552671")


async def test_debug_logs_and_dead_letters_hold_no_identifier_or_personal_value(
        caplog: pytest.LogCaptureFixture) -> None:
    """Every log record emitted at DEBUG and above while the processor handles pings, a
    login with two aliases, a link refused because the alias belongs to someone else, an
    erasure, undecodable messages keyed by a customer id and the whole hostile corpus, once
    formatted as the worker writes it (JSON with every field), contains none of the
    customers' identifiers or personal values; nor does any dead letter."""
    broker = LoopBack.over(RULES, "pii", pii_salt="component-salt")
    sink, topics = broker.sink, broker.topics

    async def deliver(raw: bytes, key: bytes | None = None) -> None:
        await broker.deliver(topics.events, 0, key, raw)
        await broker.drain()

    with caplog.at_level(logging.DEBUG):
        await deliver(keyed("p1", "ping", 1, anonymous_id="a-secret-1"))
        await deliver(keyed("login", "identified", 2, customer_id="c-secret-1",
                            anonymous_id="a-secret-1", loyalty_id="l-secret-1"))
        await deliver(keyed("steal", "identified", 3, customer_id="c-secret-2",
                            anonymous_id="a-secret-1"))
        await deliver(keyed("bye", "erasure_requested", 4, customer_id="c-secret-1"))
        await deliver(b'{"identity": {"customer_id": "c-secret-3"', key=b"customer_id:c-secret-3")
        await deliver(b"\xff" + b"c-secret-4", key=b"customer_id:c-secret-4")
        for number, (_, parts, _sentence) in enumerate(HOSTILE):
            raw = orjson.dumps({**event_dict("ping", event_id=f"h{number}", at=at_minute(30),
                                             customer=f"c-secret-h{number}"), **parts})
            await deliver(raw, key=f"customer_id:c-secret-h{number}".encode())

    dead = [record.value or b"" for record in sink.on(topics.deadletter)]
    reasons = [orjson.loads(value)["reason"] for value in dead]
    assert reasons.count("personal_data") == len(HOSTILE)
    assert {"identity_conflict", "invalid_json", "invalid_utf8"} <= set(reasons)
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("dead-lettered" in line for line in lines)
    for text in [*lines, *(value.decode() for value in dead),
                 *((r.key or b"").decode() for r in sink.on(topics.deadletter))]:
        for secret in SECRETS:
            assert secret not in text, (secret, text[:300])
