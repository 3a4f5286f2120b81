"""`touchflow report`: does an action work? Treated customers against the experiment holdout.

Input is the decision audit stream (`<prefix>.decisions` dumped to JSONL, or `touchflow replay
--audit`), or an event log replayed on the spot (`--rules R --input LOG`). Per action:

- treated: decisions sent; accepted (an `accepted` or `converted` response); converted (a
  conversion credited by attribution);
- holdout: decisions held out by an experiment; converted (credited the same way: a held-out
  customer who buys anyway is the baseline).

Rates come with 95 % Wilson score intervals, and the conversion uplift (treated minus holdout)
with Newcombe's hybrid score interval, both sound for small counts and rates near 0 or 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.codec import JSONDecodeError, dumps, loads
from schemas.vocabulary import SUCCESS_RESPONSES

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["ActionStats", "Interval", "newcombe", "register", "tally", "wilson"]

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Interval:
    """A proportion (or difference) with its 95 % interval; None when there is no data."""

    value: float | None
    low: float | None
    high: float | None

    def text(self, percent: bool = True) -> str:
        if self.value is None or self.low is None or self.high is None:
            return "-"
        scale = 100.0 if percent else 1.0
        return f"{self.value * scale:.1f} [{self.low * scale:.1f}, {self.high * scale:.1f}]"

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


def wilson(successes: int, trials: int, z: float = Z95) -> Interval:
    """Wilson score interval of successes/trials."""
    if trials <= 0:
        return Interval(None, None, None)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(a: Interval, b: Interval) -> Interval:
    """Newcombe's hybrid score interval for the difference a - b of two independent rates."""
    if None in (a.value, a.low, a.high, b.value, b.low, b.high):
        return Interval(None, None, None)
    assert a.value is not None and a.low is not None and a.high is not None
    assert b.value is not None and b.low is not None and b.high is not None
    diff = a.value - b.value
    low = diff - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = diff + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    return Interval(diff, low, high)


@dataclass(slots=True)
class ActionStats:
    """Counts for one action, from the audit records."""

    sent: int = 0
    held_out: int = 0
    accepted: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    converted: set[str] = field(default_factory=set)
    converted_holdout: set[str] = field(default_factory=set)

    def rows(self) -> dict[str, Any]:
        accept = wilson(len(self.accepted), self.sent)
        conv_t = wilson(len(self.converted), self.sent)
        conv_h = wilson(len(self.converted_holdout), self.held_out)
        return {
            "sent": self.sent,
            "accepted": len(self.accepted),
            "acceptance": accept,
            "converted": len(self.converted),
            "conversion_treated": conv_t,
            "held_out": self.held_out,
            "converted_holdout": len(self.converted_holdout),
            "conversion_holdout": conv_h,
            "uplift": newcombe(conv_t, conv_h),
        }


def tally(records: Iterable[dict[str, Any]]) -> dict[str, ActionStats]:
    """Per-action counts from decision audit records (other kinds are ignored)."""
    stats: dict[str, ActionStats] = {}
    for record in records:
        action = record.get("action")
        if not isinstance(action, str):
            continue
        kind = record.get("kind", "action")
        outcome = record.get("outcome")
        entry = stats.get(action)
        if entry is None:
            entry = stats[action] = ActionStats()
        action_id = str(record.get("action_id") or record.get("decision_id"))
        if kind == "action":
            if outcome == "sent":
                entry.sent += 1
            elif outcome == "held_out":
                entry.held_out += 1
        elif kind == "response" and record.get("arm") != "holdout":
            if outcome in SUCCESS_RESPONSES:
                entry.accepted.add(action_id)
            elif outcome == "declined":
                entry.declined.add(action_id)
        elif kind == "attribution":
            if record.get("arm") == "holdout":
                entry.converted_holdout.add(action_id)
            else:
                entry.converted.add(action_id)
    return stats


def _table(stats: dict[str, ActionStats]) -> str:
    header = ("action", "sent", "accept % [95% CI]", "conv % treated", "held out",
              "conv % holdout", "uplift pts [95% CI]")
    lines = [header]
    total = ActionStats()
    for name in sorted(stats):
        entry = stats[name]
        if not (entry.sent or entry.held_out):
            continue
        rows = entry.rows()
        lines.append((name, str(entry.sent), rows["acceptance"].text(),
                      rows["conversion_treated"].text(), str(entry.held_out),
                      rows["conversion_holdout"].text(), rows["uplift"].text()))
        total.sent += entry.sent
        total.held_out += entry.held_out
        total.accepted |= {f"{name}/{x}" for x in entry.accepted}
        total.converted |= {f"{name}/{x}" for x in entry.converted}
        total.converted_holdout |= {f"{name}/{x}" for x in entry.converted_holdout}
    if len(lines) > 2:
        rows = total.rows()
        lines.append(("(all actions)", str(total.sent), rows["acceptance"].text(),
                      rows["conversion_treated"].text(), str(total.held_out),
                      rows["conversion_holdout"].text(), rows["uplift"].text()))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _read_audit(paths: list[str], bad: list[str]) -> Iterable[dict[str, Any]]:
    from service.replay.reader import LogFile

    for path in paths:
        for number, line in LogFile(path):
            try:
                record = loads(line)
            except JSONDecodeError:
                bad.append(f"{path}:{number}: not JSON")
                continue
            if isinstance(record, dict):
                yield record
            else:
                bad.append(f"{path}:{number}: not a JSON object")


def _replayed(rules: str, log: str, context: str | None,
              partitions: int | None = None) -> list[dict[str, Any]]:
    from service.domain.rules import load_rulebook
    from service.ops.settings import load_settings
    from service.replay.reader import LogFile, decode_lines, load_context
    from service.replay.runner import replay_stream

    class _Keep:
        def __init__(self) -> None:
            self.records: list[dict[str, Any]] = []

        def write(self, line: bytes) -> int:
            self.records.append(loads(line))
            return len(line)

    keep = _Keep()
    source = LogFile(log)
    replay_stream(decode_lines(source, lambda record: None, source.label), load_rulebook(rules),
                  context=load_context(context) if context else None,
                  audit=keep,  # type: ignore[arg-type]
                  partitions=partitions or load_settings().partitions)
    return keep.records


def _cmd_report(args: argparse.Namespace) -> int:
    from service.replay.reader import ReplayInputError

    bad: list[str] = []
    if args.json and args.json != "-" and not Path(args.json).parent.is_dir():
        print(f"touchflow report: cannot write --json {args.json}: the directory "
              f"{Path(args.json).parent} does not exist", file=sys.stderr)
        return 2
    try:
        if args.input:
            if not args.rules:
                print("touchflow report: --input needs --rules (the rulebook to replay with)",
                      file=sys.stderr)
                return 2
            records: Iterable[dict[str, Any]] = _replayed(args.rules, args.input, args.context,
                                                          args.partitions)
        elif args.audit:
            records = _read_audit(args.audit, bad)
        else:
            print("touchflow report: give --audit FILE (decision records) or --rules R "
                  "--input LOG", file=sys.stderr)
            return 2
        stats = tally(records)
    except ReplayInputError as exc:
        print(f"touchflow report: {exc}", file=sys.stderr)
        return 2
    # with `--json -` the JSON is stdout, so the table goes to stderr
    print(_table(stats), file=sys.stderr if args.json == "-" else sys.stdout)
    for line in bad[:20]:
        print(f"skipped {line}", file=sys.stderr)
    if args.json:
        payload = {name: {k: (v.to_dict() if isinstance(v, Interval) else v)
                          for k, v in entry.rows().items()}
                   for name, entry in sorted(stats.items())}
        if args.json == "-":
            sys.stdout.buffer.write(dumps(payload) + b"\n")
            sys.stdout.buffer.flush()
        else:
            with open(args.json, "wb") as handle:
                handle.write(dumps(payload))
    return 0


def register(subparsers: SubParsers) -> None:
    """Add the `report` subcommand to the `touchflow` parser."""
    parser = subparsers.add_parser(
        "report", help="acceptance and conversion per action, treated against the holdout",
        description="Acceptance and conversion rates per action with 95%% confidence "
        "intervals, treated customers against the experiment holdout (control group).",
    )
    parser.add_argument("--audit", metavar="FILE", action="append", default=[],
                        help="decision audit records as JSONL, plain or gzip (repeatable)")
    parser.add_argument("--rules", "-r", metavar="FILE", help="replay --input with this rulebook")
    parser.add_argument("--input", "-i", metavar="LOG", help="event log to replay")
    parser.add_argument("--context", metavar="FILE", help="reference data for the replay")
    parser.add_argument("--partitions", type=int, metavar="N", help="the workers' partition "
                        "count (learned tallies are per partition); default "
                        "TOUCHFLOW_PARTITIONS")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON "
                        "('-': stdout, the table then goes to stderr)")
    parser.set_defaults(handler=_cmd_report)
