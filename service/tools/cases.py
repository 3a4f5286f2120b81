"""Persona regression cases for a rulebook: `touchflow rules test FILE...`.

A cases file (YAML, next to its rulebook, e.g. examples/default/cases.yaml) names the rulebook
and lists cases: given these events (and this context), expect exactly these actions sent and
exactly these suppressions, in order. Each case runs on fresh profiles through replay's
engine (service/replay/replayer.py: the worker's per-event step), so a case passes or fails
as production would decide. A failure prints a unified diff of expected against actual lines.

    rulebook: rulebook.yaml            # relative to this file (the default)
    context_file: context.jsonl        # optional, versioned context records, as for replay
    cases:
      - name: a second download books a sales callback
        customer: c-1                  # the events' customer_id unless they name identities
        context: {"stock:sku-1": 3}    # optional: values in force from the start
        events:                        # event fields; event_id, channel, identity defaulted
          - {type: content_downloaded, at: "2026-03-02T09:00:00+09:00"}
        expect:
          actions: [callback_offer]    # names, or {action, channel, event} mappings
          suppressed:                  # optional: {action, reason, event}
            - {action: sms_offer, reason: quiet_hours}

A key left out of `expect` is not checked; `actions: []` expects that nothing is sent.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.event import EventError, parse_event
from service.domain.context_table import ContextTable
from service.domain.rules import Rulebook, RulebookError, load_rulebook
from service.domain.yamlsrc import Locator, Unreadable, read_source, read_yaml

__all__ = ["CaseResult", "CasesError", "load_cases", "run_cases", "run_files"]

_CASE_KEYS = {"name", "customer", "context", "events", "expect"}
_ACTION_KEYS = ("action", "channel", "event")
_SUPPRESSED_KEYS = ("action", "reason", "event")


class CasesError(Exception):
    """A cases file that cannot be run; the message says where and why."""


@dataclass
class Case:
    """One persona: its events and what the rulebook must do with them."""

    name: str
    line: int
    events: list[dict[str, Any]]
    context: dict[str, Any]
    actions: list[Any] | None
    suppressed: list[Any] | None


@dataclass
class CaseResult:
    """A case run: passed, or the diff that says how it failed."""

    name: str
    line: int
    diff: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.diff


@dataclass
class CasesFile:
    """A loaded cases file: the rulebook, the shared context, the cases."""

    source: str
    rulebook: Rulebook
    context: ContextTable
    cases: list[Case]


def load_cases(path: str | os.PathLike[str]) -> CasesFile:
    """Read a cases file and its rulebook; raise `CasesError` (or `RulebookError`)."""
    source = os.fspath(path)
    try:
        text = read_source(source)
    except Unreadable as exc:
        raise CasesError(f"{source}: cannot read the cases file: {exc}") from None
    data, locator, problems = read_yaml(text, source)
    if problems:
        raise CasesError(str(problems[0]))
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list) or not data["cases"]:
        raise CasesError(f"{source}:1: a cases file is a mapping with a non-empty `cases` list")
    folder = Path(source).parent
    rulebook = load_rulebook(folder / str(data.get("rulebook", "rulebook.yaml")))
    context = ContextTable()
    if data.get("context_file") is not None:
        from service.replay.reader import BadRecord, load_context

        def bad(record: BadRecord) -> None:
            raise CasesError(f"{source}: context_file: {record}")

        context = load_context(folder / str(data["context_file"]), bad)
    cases = [_case(item, index, locator) for index, item in enumerate(data["cases"])]
    return CasesFile(source, rulebook, context, cases)


def _fail(locator: Locator, path: tuple[str | int, ...], message: str) -> CasesError:
    return CasesError(str(locator.problem(path, message)))


def _case(item: Any, index: int, locator: Locator) -> Case:
    path: tuple[str | int, ...] = ("cases", index)
    if not isinstance(item, dict):
        raise _fail(locator, path, "a case is a mapping with name, events and expect")
    unknown = sorted(set(item) - _CASE_KEYS)
    if unknown:
        raise _fail(locator, (*path, unknown[0]), "unknown key; use " + ", ".join(
            sorted(_CASE_KEYS)))
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(locator, (*path, "name"), "every case needs a name")
    events = item.get("events")
    if not isinstance(events, list) or not events:
        raise _fail(locator, (*path, "events"), "needs a non-empty list of events")
    expect = item.get("expect")
    if not isinstance(expect, dict) or not set(expect) <= {"actions", "suppressed"} \
            or not expect:
        raise _fail(locator, (*path, "expect"), "needs `actions` and/or `suppressed` lists")
    for key in expect:
        if not isinstance(expect[key], list):
            raise _fail(locator, (*path, "expect", key), "must be a list")
    context = item.get("context") or {}
    if not isinstance(context, dict):
        raise _fail(locator, (*path, "context"), "maps context keys to values")
    customer = str(item.get("customer", "persona"))
    built = []
    for number, raw in enumerate(events):
        if not isinstance(raw, dict):
            raise _fail(locator, (*path, "events", number), "an event is a mapping")
        built.append(_event(raw, customer, name, number, locator, (*path, "events", number)))
    return Case(name, locator.line(path), built, context, expect.get("actions"),
                expect.get("suppressed"))


def _event(raw: dict[str, Any], customer: str, case: str, number: int, locator: Locator,
           path: tuple[str | int, ...]) -> dict[str, Any]:
    wire = dict(raw)
    if "at" in wire:
        wire["occurred_at"] = wire.pop("at")
    slug = "-".join(case.lower().split())[:40]
    wire.setdefault("event_id", f"{slug}-{number + 1}")
    wire.setdefault("channel", "web")
    wire.setdefault("identity", {"customer_id": customer})
    wire.setdefault("properties", {})
    try:
        parse_event(wire)
    except EventError as exc:
        raise _fail(locator, path, f"not a valid event: {exc}") from None
    return wire


def run_cases(cases: CasesFile) -> list[CaseResult]:
    """Run every case on fresh profiles; one result per case."""
    from service.replay.replayer import Replayer

    results = []
    for case in cases.cases:
        context = cases.context.copy()
        for key, value in case.context.items():
            context.put(str(key), value)
        replayer = Replayer(cases.rulebook, context)
        sent: list[dict[str, Any]] = []
        suppressed: list[dict[str, Any]] = []
        for wire in case.events:
            outcome = replayer.apply(parse_event(wire))
            sent.extend(outcome.actions)
            suppressed.extend(d for d in outcome.decisions
                              if d.get("kind", "action") == "action"
                              and d.get("outcome") != "sent")
        result = CaseResult(case.name, case.line)
        if case.actions is not None:
            result.diff += _compare("actions", case.actions, [
                {"action": a["action"], "channel": a["channel"],
                 "event": a["trigger_event_id"]} for a in sent], _ACTION_KEYS)
        if case.suppressed is not None:
            result.diff += _compare("suppressed", case.suppressed, [
                {"action": d["action"], "reason": d.get("suppressed_by") or d.get("outcome"),
                 "event": d["trigger_event_id"]} for d in suppressed], _SUPPRESSED_KEYS)
        results.append(result)
    return results


def _compare(what: str, expected: Sequence[Any], actual: Sequence[Mapping[str, Any]],
             keys: tuple[str, ...]) -> list[str]:
    """A unified diff of the expected and actual lines (empty: they agree). Lines show the
    action (and reason) and the fields any expected item names (a bare name is the action)."""
    wanted = [item if isinstance(item, dict) else {"action": item} for item in expected]
    shown = [k for k in keys if k in ("action", "reason") or any(k in item for item in wanted)]

    def line(item: Mapping[str, Any]) -> str:
        return " ".join(f"{k}={item.get(k)}" if k != "action" else str(item.get(k))
                        for k in shown)

    left = [line(item) for item in wanted]
    right = [line(item) for item in actual]
    if left == right:
        return []
    return list(difflib.unified_diff(left, right, f"expected {what}", f"actual {what}",
                                     lineterm="", n=len(left) + len(right)))


def report(path: str, results: Sequence[CaseResult]) -> tuple[list[str], int]:
    """Printable lines for one file's results, and how many cases failed."""
    lines = []
    failed = [r for r in results if not r.passed]
    for result in failed:
        lines.append(f"FAIL {path}:{result.line}: {result.name}")
        lines.extend("    " + text for text in result.diff)
    lines.append(f"{path}: {len(results) - len(failed)} of {len(results)} cases passed")
    return lines, len(failed)


def run_files(paths: Sequence[str]) -> tuple[list[str], list[str], int]:
    """Run the cases files: (stdout lines, stderr lines, exit code: 0 pass, 1 fail, 2 bad)."""
    out: list[str] = []
    err: list[str] = []
    code = 0
    for path in paths:
        try:
            cases = load_cases(path)
        except CasesError as exc:
            err.append(f"touchflow: {exc}")
            code = 2
            continue
        except RulebookError as exc:
            err.append(f"touchflow: {path}: the rulebook is invalid:\n{exc}")
            code = 2
            continue
        lines, failed = report(path, run_cases(cases))
        out.extend(lines)
        if failed and code == 0:
            code = 1
    return out, err, code
