"""The consumer kit (touchflow_consumer): decoding actions, de-duplicating them, and that it
imports without the service."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.models import Action as ActionModel
from touchflow_consumer import Action, ActionError, Deduplicator, decode, trace_id

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = {
    "action_id": "4c1f" * 16, "customer_id": "c-42", "action": "callback_offer",
    "channel": "call_center", "score": 27, "reasons": ["lead_score 27 >= 25"],
    "trigger_event_id": "e-1001", "rulebook_version": "2026-03-01.1",
    "decided_at": "2026-03-02T09:30:00+09:00", "expires_at": "2026-03-03T09:30:00+09:00",
    "payload": {"script": "callback"}, "experiment": {"e1": "treated"}, "rank_note": "x",
    "legal_basis": "legitimate_interest", "purpose": "service_quality",
}


def test_decode_reads_every_contract_field() -> None:
    """A contract action decodes into typed fields; an unknown (later minor version) field is
    kept in `extra`; the same bytes also pass the pydantic model the JSON Schema comes from."""
    raw = orjson.dumps(SAMPLE)
    action = decode(raw)
    assert isinstance(action, Action)
    assert action.score == 27.0 and isinstance(action.score, float)
    assert action.reasons == ("lead_score 27 >= 25",)
    assert action.decided_at == datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
    assert action.payload == {"script": "callback"}
    assert action.experiment == {"e1": "treated"}
    assert action.extra == {"rank_note": "x"}
    assert (action.legal_basis, action.purpose) == ("legitimate_interest", "service_quality")
    assert not action.expired(datetime(2026, 3, 3, 0, 29, tzinfo=UTC))
    assert action.expired(datetime(2026, 3, 3, 0, 30, tzinfo=UTC))
    ActionModel.model_validate_json(raw)
    assert decode(raw.decode()) == decode(bytearray(raw)) == action


def test_decode_accepts_what_the_worker_writes() -> None:
    """An action exactly as the decision core writes it (replay of the lead-scoring example)
    decodes."""
    import io

    from service.domain.rules import load_rulebook
    from service.replay.runner import replay_file

    out = io.BytesIO()
    rulebook = load_rulebook(ROOT / "examples" / "lead_scoring" / "rulebook.yaml")
    replay_file(ROOT / "examples" / "lead_scoring" / "events.jsonl", rulebook, output=out)
    lines = out.getvalue().splitlines()
    assert lines
    for line in lines:
        action = decode(line)
        assert action.customer_id and action.reasons


@pytest.mark.parametrize(("change", "message"), [
    ({"score": "27"}, "action field 'score' must be a number"),
    ({"score": True}, "action field 'score' must be a number"),
    ({"channel": "pigeon"}, "action field 'channel' is not one of"),
    ({"action_id": ""}, "action field 'action_id' must be a non-empty string"),
    ({"action_id": None}, "action has no 'action_id'"),
    ({"reasons": "because"}, "action field 'reasons' must be a list of strings"),
    ({"decided_at": "yesterday"}, "action field 'decided_at' is not an ISO-8601 date-time"),
    ({"expires_at": "2026-03-03T09:30:00"}, "action field 'expires_at' has no UTC offset"),
    ({"payload": []}, "action field 'payload' must be an object"),
    ({"experiment": {"e1": 1}}, "action field 'experiment' must be an object of strings"),
    ({"legal_basis": "because"}, "action field 'legal_basis' is not one of"),
    ({"purpose": 3}, "action field 'purpose' must be a string"),
])
def test_decode_errors_name_the_field(change: dict[str, object], message: str) -> None:
    """Each contract violation raises ActionError with one sentence naming the field, never
    the offending value."""
    data = {k: v for k, v in {**SAMPLE, **change}.items() if v is not None}
    with pytest.raises(ActionError) as caught:
        decode(orjson.dumps(data))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value) and "pigeon" not in str(caught.value)


def test_decode_rejects_non_json_and_non_objects() -> None:
    """Bytes that are not JSON, not UTF-8, or not an object raise ActionError."""
    for raw, message in ((b'{"action_id": ', "not valid UTF-8 JSON"),
                         (b"\xff\xfe", "not valid UTF-8 JSON"),
                         (b"[1, 2]", "not a JSON object")):
        with pytest.raises(ActionError, match=message):
            decode(raw)


def test_trace_id_reads_the_traceparent_header() -> None:
    """The trace id is the second field of a record's traceparent; absent header: None."""
    headers = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    assert trace_id(headers) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id([]) is None and trace_id(None) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_deduplicator_forgets_after_ttl_and_past_its_bound() -> None:
    """A repeat within the TTL is reported, after the TTL it is new again (a repeat does not
    extend the TTL), and past `max_entries` the oldest id is forgotten first."""
    clock = Clock()
    seen = Deduplicator(ttl_s=60, max_entries=3, clock=clock)
    assert seen.first("a") and not seen.first("a")
    clock.now += 59
    assert not seen.first("a") and "a" in seen
    clock.now += 1
    assert "a" not in seen and seen.first("a")
    for name in "bcd":
        assert seen.first(name)
    assert len(seen) == 3 and "a" not in seen and seen.first("a")
    with pytest.raises(ValueError, match="ttl_s"):
        Deduplicator(ttl_s=0)
    with pytest.raises(ValueError, match="max_entries"):
        Deduplicator(max_entries=0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.floats(1, 100),
       st.lists(st.tuples(st.sampled_from("abcdefghij"), st.floats(0, 40)), max_size=60))
def test_deduplicator_matches_a_reference_model(bound: int, ttl: float,
                                                steps: list[tuple[str, float]]) -> None:
    """Against a plain list of (id, first seen) kept in order: `first()` is False exactly when
    the id was first seen less than `ttl` ago and is among the `bound` newest remembered ids;
    never more than `bound` entries are kept."""
    clock = Clock()
    seen = Deduplicator(ttl_s=ttl, max_entries=bound, clock=clock)
    model: list[tuple[str, float]] = []
    for name, advance in steps:
        clock.now += advance
        model = [(n, t) for n, t in model if clock.now < t + ttl]
        remembered = any(n == name for n, _ in model)
        assert seen.first(name) is (not remembered)
        if not remembered:
            model = [*model, (name, clock.now)][-bound:]
        assert len(seen) <= bound
        assert len(seen) == len(model)


def test_kit_imports_without_the_service() -> None:
    """Importing touchflow_consumer loads neither pydantic, aiokafka nor the service."""
    code = ("import sys, touchflow_consumer; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'aiokafka', 'service', 'schemas', 'faust')]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
