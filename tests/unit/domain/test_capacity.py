"""Capacity across customers (service/domain/capacity.py): the rulebook's `capacity` entries,
and what arbitration does when a limit is reached, through replay's driver of the step."""

from __future__ import annotations

from collections import Counter
from textwrap import dedent
from typing import Any

import pytest
from pydantic import TypeAdapter

from schemas.codec import dumps, loads
from schemas.models import Action, DecisionRecord
from service.domain import RulebookError, parse_rulebook
from service.domain.capacity import CapacityState, Constraint
from service.replay.replayer import Replayer
from tests.events import make_event
from tests.unit.domain.replaykit import EXAMPLES, load_example

BASE = """\
version: "cap-1"
actions:
  call:
    channel: call_center
    basis: service
    when: [{event: {type: lead_qualified}}]
    priority: 10
    group: follow_up
  mail:
    channel: email
    basis: service
    when: [{event: {type: lead_qualified}}]
    group: follow_up
"""


def _rulebook(capacity: str, extra: str = "") -> Any:
    return parse_rulebook(BASE + extra + dedent(capacity), "rules.yaml")


def _problems(capacity: str) -> list[str]:
    with pytest.raises(RulebookError) as caught:
        _rulebook(capacity)
    return [str(p) for p in caught.value.problems]


def _run(rulebook: Any, customers: int, at: str = "2026-03-02T12:{m:02d}:00+00:00",
         partitions: int = 1, replayer: Replayer | None = None) -> tuple[Replayer,
                                                                         list[dict[str, Any]]]:
    replay = replayer or Replayer(rulebook, partitions=partitions)
    decisions: list[dict[str, Any]] = []
    for n in range(customers):
        outcome = replay.apply(make_event("lead_qualified", customer=f"lead-{n}",
                                          at=at.format(m=n % 60)))
        decisions.extend(outcome.decisions)
    return replay, decisions


def _outcomes(decisions: list[dict[str, Any]]) -> Counter[tuple[str, str, str | None]]:
    return Counter((d["action"], d["outcome"], d["suppressed_by"]) for d in decisions)


def test_capacity_entries_compile_with_scope_limit_period_and_behaviour() -> None:
    """`per: 1h` is an hour of event time, `total` (the default) one period for ever; the
    entry covers the actions of its action, group or channel."""
    rulebook = _rulebook("""\
        capacity:
          call_center: {channel: call_center, limit: 20, per: 1h}
          follow_ups: {group: follow_up, limit: 500, when_reached: suppress}
        """)
    hourly, total = rulebook.capacity["call_center"], rulebook.capacity["follow_ups"]
    assert (hourly.scope, hourly.target, hourly.limit, hourly.period_ms, hourly.suppress) == \
        ("channel", "call_center", 20, 3_600_000, False)
    assert (total.scope, total.period_ms, total.suppress) == ("group", 0, True)
    names = {action.name: [c.name for c in action.capacity]
             for actions in rulebook.actions.by_type.values() for action in actions}
    assert names == {"call": ["call_center", "follow_ups"], "mail": ["follow_ups"]}


def test_bad_capacity_entries_are_refused_with_file_line_and_field() -> None:
    """No scope or two scopes, an action or channel no action has, a period that is not a
    duration, a limit below 1 and an unknown behaviour: each one sentence at its field."""
    problems = _problems("""\
        capacity:
          none: {limit: 5}
          both: {action: call, channel: email, limit: 5}
          ghost: {action: nobody, limit: 5}
          silent: {channel: sms, limit: 5}
          odd: {action: call, limit: 5, per: hourly}
          zero: {action: call, limit: 0}
          how: {action: call, limit: 5, when_reached: queue}
        """)
    text = "\n".join(problems)
    assert all(p.startswith("rules.yaml:") for p in problems)
    assert "capacity.odd.per: " in text and "`total` or a duration" in text
    assert "capacity.zero.limit: " in text
    assert "capacity.how.when_reached: " in text
    problems = _problems("""\
        capacity:
          none: {limit: 5}
          both: {action: call, channel: email, limit: 5}
          ghost: {action: nobody, limit: 5}
          silent: {channel: sms, limit: 5}
        """)
    assert problems == [
        "rules.yaml:15: capacity.none: name exactly one scope: action, group or channel",
        "rules.yaml:16: capacity.both: name exactly one scope: action, group or channel",
        "rules.yaml:17: capacity.ghost.action: no action has action 'nobody'",
        "rules.yaml:18: capacity.silent.channel: no action has channel 'sms'",
    ]


def test_fallback_sends_the_limit_exactly_and_the_next_action_to_the_rest() -> None:
    """Demand far above a limit of 3 calls an hour: exactly 3 calls are sent, every other
    lead gets the e-mail, its call suppressed by `capacity` with the reason saying so."""
    rulebook = _rulebook("""\
        capacity:
          call_center: {channel: call_center, limit: 3, per: 1h}
        """)
    _, decisions = _run(rulebook, 12)
    counts = _outcomes(decisions)
    assert counts[("call", "sent", None)] == 3
    assert counts[("call", "suppressed", "capacity")] == 9
    assert counts[("mail", "sent", None)] == 9
    capped = next(d for d in decisions if d["suppressed_by"] == "capacity")
    assert capped["reasons"][0] == ("capacity call_center (3 per 1h) reached; falling back to "
                                    "the next eligible action")


def test_suppress_stops_the_lower_ranked_actions_too() -> None:
    """`when_reached: suppress`: once the calls are spent, neither the call nor the e-mail
    ranked below it is sent."""
    rulebook = _rulebook("""\
        capacity:
          call_center: {channel: call_center, limit: 2, when_reached: suppress}
        """)
    _, decisions = _run(rulebook, 8)
    counts = _outcomes(decisions)
    assert counts[("call", "sent", None)] == 2
    assert counts[("mail", "sent", None)] == 0
    assert counts[("mail", "suppressed", "capacity")] == 6


def test_a_new_period_brings_new_capacity_and_returns_what_was_unused() -> None:
    """A limit per hour: the next hour sends its own 3 calls; the first hour's unspent quota
    went back to the owner's pool, but the share of a partition that had no event in that
    hour, which it still holds (spent + pool + untouched shares == limit)."""
    rulebook = _rulebook("""\
        capacity:
          call_center: {channel: call_center, limit: 3, per: 1h}
        """)
    replay, first = _run(rulebook, 2, partitions=3)
    _, second = _run(rulebook, 60, at="2026-03-02T13:{m:02d}:00+00:00", replayer=replay)
    _run(rulebook, 6, at="2026-03-02T14:{m:02d}:00+00:00", replayer=replay)  # 12:00 closes
    assert _outcomes(second)[("call", "sent", None)] == 3
    hour = make_event(at="2026-03-02T12:00:00+00:00").ts_ms // 3_600_000
    spent = sum(s.spent("call_center", hour) for s in replay.capacity.values())
    pool = sum(s.pool_left("call_center", hour) or 0 for s in replay.capacity.values())
    shares = CapacityState(rulebook.capacity, 0, 3)
    untouched = sum(shares.share(rulebook.capacity["call_center"], hour, p)
                    for p in range(3) if p not in replay.capacity
                    or ("call_center", hour) not in replay.capacity[p].holds)
    assert untouched > 0  # (2 leads: at most 2 of the 3 partitions touched the hour)
    assert spent == _outcomes(first)[("call", "sent", None)] and spent + pool + untouched == 3


def test_held_out_decisions_do_not_spend_capacity() -> None:
    """A call held out by an experiment is audited, not sent, and spends nothing: with a
    limit of 2, the treated leads still get 2 calls."""
    rulebook = _rulebook("""\
        capacity:
          call_center: {channel: call_center, limit: 2}
        """, extra=dedent("""\
        experiments:
          callback_test:
            arms: {treated: 1, control: 1}
            holdout: [control]
            actions: [call]
        """))
    _, decisions = _run(rulebook, 20)
    counts = _outcomes(decisions)
    assert counts[("call", "sent", None)] == 2
    assert counts[("call", "held_out", "experiment_holdout")] >= 5


def test_quota_records_are_idempotent_and_the_state_survives_its_stored_form() -> None:
    """The first demand spends the partition's share without asking; at the low-water mark
    it asks; an ask delivered twice is answered twice the same, and a grant applied twice
    counts once; the stored form reads back to the same state."""
    constraint = Constraint("calls", "action", "call", 10, 0, False, 4)
    owner = CapacityState({"calls": constraint}, 0, 1)
    assert owner.held("calls", 0) == 4 and owner.pool_left("calls", 0) == 6  # the share
    assert owner.take([constraint], 0) is None and not owner.outbox
    assert owner.take([constraint], 0) is None  # 2 left: the low-water mark, asks
    ask = owner.outbox.pop()
    owner.receive(ask.body)
    owner.receive(ask.body)  # redelivered: answered again, the same
    grants = owner.outbox[:]
    owner.outbox.clear()
    assert len(grants) == 2 and grants[0].body == grants[1].body
    for grant in grants:
        owner.receive(grant.body)
    assert owner.held("calls", 0) == 6 and owner.pool_left("calls", 0) == 2
    again = CapacityState.from_bytes(owner.to_bytes(), {"calls": constraint}, 0, 1)
    assert again.to_bytes() == owner.to_bytes()


@pytest.mark.parametrize(("partitions", "calls"), [(1, (20, 12)), (4, (20, 12)),
                                                   (12, (20, 12)), (48, (11, 4))])
def test_lead_scoring_capacity_example(partitions: int, calls: tuple[int, int]) -> None:
    """examples/lead_scoring_capacity as its README tells: never more than 20 callbacks an
    hour whatever the partition count, the e-mail for the others, and the limit reached at
    every partition count (each partition starts the hour with a share, the owner recalls
    what partitions hold beyond their demand); every
    record, `suppressed_by: capacity` included, keeps the wire contract."""
    rulebook, events, context = load_example("lead_scoring_capacity")
    replay = Replayer(rulebook, context, partitions=partitions)
    sent: Counter[tuple[str, str]] = Counter()
    records: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    for item in events:
        outcome = replay.apply(item)
        records.extend(outcome.decisions)
        actions.extend(outcome.actions)
        for action in outcome.actions:
            sent[(item.occurred_at[11:13], action["action"])] += 1
    TypeAdapter(list[DecisionRecord]).validate_python(records)  # the wire contract
    TypeAdapter(list[Action]).validate_python(actions)
    assert (sent[("10", "sales_callback")], sent[("11", "sales_callback")]) == calls
    assert sent[("10", "nurture_email")] == 40 - calls[0]
    assert sent[("11", "nurture_email")] == 12 - calls[1]


def test_the_replay_report_shows_where_capacity_ran_out() -> None:
    """`touchflow replay --report` on the example: a Capacity section per constraint, the
    calls sent per hour against the limit of 20, and the one hour that reached it."""
    from service.replay.html_report import render_report
    from service.replay.runner import replay_file

    folder = EXAMPLES / "lead_scoring_capacity"
    rulebook, _, _ = load_example("lead_scoring_capacity")
    result = replay_file(folder / "events.jsonl", rulebook, observe=True, partitions=4)
    stats = result.stats
    assert sorted(stats.capacity_spent["call_center"].values()) == [12, 20]
    page = render_report([result], source="events.jsonl")
    assert "<h3>call_center: 20 per 1h</h3>" in page
    assert "1 of 2 period(s) reached the limit." in page
    assert "call_center: sent vs limit per hour" in page


def test_a_big_context_is_wrapped_with_the_quota_not_copied() -> None:
    """`with_quota` on a context of 100 keys: every key still reads the same, the capacity
    state reads under its reserved key, and no limits (None) leaves the context as it is."""
    from service.domain.capacity import CAPACITY_CONTEXT, with_quota

    state = CapacityState({}, 0, 1)
    big = {f"stock:{n}": n for n in range(100)}
    wrapped = with_quota(big, state)
    assert wrapped[CAPACITY_CONTEXT] is state and wrapped["stock:7"] == 7
    assert len(wrapped) == 101 and set(wrapped) == {*big, CAPACITY_CONTEXT}
    assert wrapped.get("absent") is None
    assert with_quota(big, None) is big


CHANNELS = """\
version: "cap-channels-1"
actions:
  delay_notice:
    channels: [sms, email]
    basis: service
    when: [{event: {type: lead_qualified}}]
  survey:
    channel: web
    basis: service
    when: [{event: {type: lead_qualified}}]
    priority: 0.1
"""


@pytest.mark.parametrize("behaviour", ["fallback", "suppress"])
def test_a_channel_whose_capacity_is_reached_gives_way_to_the_next_channel(
        behaviour: str) -> None:
    """An action preferring sms, then e-mail, with 2 SMS in total: with `fallback`, the
    first 2 customers get the SMS and the others the e-mail, their audit record listing sms
    as skipped for `capacity`: the next channel is tried before arbitration moves to the next
    action (the survey, ranked below, is never sent: one action per event); with `suppress`,
    the action is suppressed after 2 (no e-mail) and so is the survey ranked below it."""
    rulebook = parse_rulebook(CHANNELS + dedent(f"""\
        capacity:
          sms: {{channel: sms, limit: 2, when_reached: {behaviour}}}
        """), "rules.yaml")
    _, decisions = _run(rulebook, 6)
    notices = [d for d in decisions if d["action"] == "delay_notice"]
    sent = Counter((d["outcome"], d["channel"]) for d in notices)
    surveys = Counter(d["suppressed_by"] for d in decisions if d["action"] == "survey")
    if behaviour == "fallback":
        assert sent == {("sent", "sms"): 2, ("sent", "email"): 4}
        skipped = [d["skipped_channels"] for d in notices if d["channel"] == "email"]
        assert skipped == [[{"channel": "sms", "reason": "capacity",
                             "why": "capacity sms (2 total) reached; falling back to the "
                                    "next eligible action"}]] * 4
        assert surveys == {"arbitration": 6}
    else:
        assert sent == {("sent", "sms"): 2, ("suppressed", "sms"): 4}
        assert {d["suppressed_by"] for d in notices if d["outcome"] == "suppressed"} == \
            {"capacity"}
        assert surveys == {"arbitration": 2, "capacity": 4}
    TypeAdapter(list[DecisionRecord]).validate_python(decisions)


def test_a_recall_takes_quota_beyond_the_share_first_and_is_always_answered() -> None:
    """Limit 12 over 2 partitions, asks of 3 (a share of 3 each, 6 in the pool). A spends 4
    (its share and a grant of 3, 2 left), B spends 6 and is turned away: the owner recalls
    from A what it holds beyond its share, A keeps its low-water mark (1; it has been
    spending) and gives 1, which B gets. Turned away a second time, B's ask recalls
    everything: A, idle since, gives its last unit. The limit is spent exactly; a partition
    whose rulebook no longer has the constraint answers a recall with nothing (the owner
    would wait for it for ever otherwise)."""
    constraint = Constraint("calls", "action", "call", 12, 0, False, 3)
    states = [CapacityState({"calls": constraint}, p, 2) for p in range(2)]
    a, b = states

    def deliver() -> None:  # every record sent so far, in order, returns included
        for _ in range(20):
            queue = [r for s in states for r in (*s.outbox, *s.held_back)]
            for s in states:
                s.outbox.clear()
                s.held_back.clear()
            if not queue:
                return
            for record in queue:
                assert states[record.partition].receive(record.body) is None

    def takes(state: CapacityState, count: int) -> list[bool]:
        out = []
        for _ in range(count):
            out.append(state.take([constraint], 0) is None)
            deliver()
        return out

    assert takes(a, 4) == [True] * 4 and a.held("calls", 0) == 2
    assert takes(b, 7) == [True] * 6 + [False]  # the pool ran dry: turned away, asks
    owner = a if a.owns("calls", 0) else b
    pool = owner.pools[("calls", 0)]
    assert pool["rc"] == 1 and pool["wait"] == [] and pool["out"] == []
    assert (a.held("calls", 0), b.held("calls", 0)) == (1, 1)
    assert takes(b, 2) == [True, False]  # turned away again: everything recalled
    assert pool["rc"] == 2 and (a.held("calls", 0), b.held("calls", 0)) == (0, 1)
    assert takes(b, 2) == [True, False]
    assert a.spent("calls", 0) + b.spent("calls", 0) == 12  # the limit, exactly
    stranger = CapacityState({}, 1, 2)  # (its rulebook lost the constraint)
    recall = dumps({"op": "recall", "c": "calls", "p": 0, "id": "0.c9", "k": 9, "from": 0})
    assert stranger.receive(recall) is None
    assert [loads(r.body)["op"] for r in stranger.held_back] == ["ret"]
    assert loads(stranger.held_back[0].body)["n"] == 0
