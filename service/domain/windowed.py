"""Windowed traits (`within: 7d`) and the `top` trait: the folding and reading behind them.

A windowed trait keeps, in the profile, the times (and field values) of its matching events,
sorted by event time, as `[[ts, value], ...]` (`[[ts], ...]` for a count): at most `keep` of
them, the newest. Its value is read at the customer's newest event time `N` over the events
with a time in `(N - within, N]`: `count`, `sum`, `max`, `min`, `mean`, `last` (the value of
the newest one), `distinct` (the distinct values, oldest first), `distinct_count`, `top`.
An entry older than `N - within` can never be read again (`N` only grows), so it is dropped
when the trait next changes, and a late event older than that is not stored at all: the
state depends only on the events applied (in the order the partition applied them, for ties
at one millisecond), as in replay. Late events within the window count where they belong.

`top` without a window keeps, per distinct value, `[value, count, newest time]` (at most
`max_items` values: when a new one comes in, the one with the fewest events, then the
oldest, then the greatest text, is forgotten). The top value has the most events; ties go
to the one seen most recently in event time, then to the smallest text (`str`), so the
answer never depends on dict order or arrival order.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from typing import Any

from service.domain.fields import is_number
from service.domain.profile import Profile

__all__ = ["WINDOWED_KINDS", "fold_top", "fold_window", "merge_top", "merge_window", "read_top",
           "read_window", "top_of"]

#: kinds a trait with `within` may have
WINDOWED_KINDS = frozenset({"count", "sum", "max", "min", "mean", "last", "distinct",
                            "distinct_count", "top"})
_SCALAR = (str, int, float, bool)


def _ts(entry: Sequence[Any]) -> Any:
    return entry[0]


def fold_window(profile: Profile, name: str, kind: str, within: int, keep: int,
                value: object, ts: int) -> None:
    """Record one matching event (time `ts`, field `value`) in the windowed trait `name`."""
    cutoff = profile.newest_ms - within
    if ts <= cutoff:
        return  # it can never be read: the window only moves forward
    if kind != "count":
        if value is None or (kind in ("sum", "max", "min", "mean") and not is_number(value)):
            return
        if kind in ("distinct", "distinct_count", "top") and not isinstance(value, _SCALAR):
            return
    entry = [ts] if kind == "count" else [ts, value]
    traits = profile.traits
    entries = traits.get(name)
    if not isinstance(entries, list):
        entries = traits[name] = []
    if entries and entries[-1][0] > ts:
        insort(entries, entry, key=_ts)  # after equal times: arrival order among ties
    else:
        entries.append(entry)
    drop = bisect_right(entries, cutoff, key=_ts)
    if len(entries) - drop > keep:
        drop = len(entries) - keep
    if drop:
        del entries[:drop]


def read_window(profile: Profile, raw: object, kind: str, within: int) -> object:
    """The windowed trait's value at the profile's newest event time (None: no value)."""
    if not isinstance(raw, list):
        raw = []
    start = bisect_right(raw, profile.newest_ms - within, key=_ts)
    if kind == "count":
        return len(raw) - start
    live = raw[start:]
    if kind == "distinct_count":
        return len({_key(e[1]) for e in live})
    if kind == "sum":
        return sum(e[1] for e in live)
    if not live:
        return None
    if kind == "last":
        return live[-1][1]
    if kind == "max":
        return max(e[1] for e in live)
    if kind == "min":
        return min(e[1] for e in live)
    if kind == "mean":
        return sum(e[1] for e in live) / len(live)
    if kind == "distinct":
        out: list[object] = []
        known: set[tuple[str, object]] = set()
        for entry in live:
            key = _key(entry[1])
            if key not in known:
                known.add(key)
                out.append(entry[1])
        return out
    tally: dict[tuple[str, object], list[Any]] = {}
    for ts, value in live:  # top
        row = tally.get(_key(value))
        if row is None:
            tally[_key(value)] = [value, 1, ts]
        else:
            row[1] += 1
            row[2] = ts
    return top_of(tally.values())


def fold_top(profile: Profile, name: str, max_items: int, value: object, ts: int) -> None:
    """Count one event with `value` in the (unwindowed) `top` trait `name`."""
    if not isinstance(value, _SCALAR):
        return
    traits = profile.traits
    rows = traits.get(name)
    if not isinstance(rows, list):
        rows = traits[name] = []
    key = _key(value)
    for row in rows:
        if _key(row[0]) == key:
            row[1] += 1
            if ts > row[2]:
                row[2] = ts
            return
    if len(rows) >= max_items:
        rows.remove(min(rows, key=_rank))
    rows.append([value, 1, ts])


def read_top(raw: object) -> object:
    """The most frequent value of an unwindowed `top` trait (None: none yet)."""
    return top_of(raw) if isinstance(raw, list) else None


def top_of(rows: Iterable[Sequence[Any]]) -> object:
    """The value of the strongest `[value, count, newest time]` row (see the module doc)."""
    best = None
    for row in rows:
        if best is None or _rank(row) > _rank(best):
            best = row
    return None if best is None else best[0]


def merge_top(mine: list[list[Any]], theirs: list[list[Any]], max_items: int) -> list[list[Any]]:
    """Two profiles' `top` rows as one: counts added, newest times kept, bounded."""
    rows = {_key(row[0]): list(row) for row in mine}
    for value, count, ts in theirs:
        row = rows.get(_key(value))
        if row is None:
            rows[_key(value)] = [value, count, ts]
        else:
            row[1] += count
            row[2] = max(row[2], ts)
    out = sorted(rows.values(), key=_rank, reverse=True)[:max_items]
    return sorted(out, key=lambda row: (row[2], str(row[0])))


def merge_window(mine: list[list[Any]], theirs: list[list[Any]], newest_ms: int, within: int,
                 keep: int) -> list[list[Any]]:
    """Two profiles' windowed entries as one (entries in both counted once), trimmed."""
    known = {tuple(_key(x) for x in entry) for entry in mine}
    merged = list(mine) + [list(e) for e in theirs
                           if tuple(_key(x) for x in e) not in known]
    merged.sort(key=_ts)
    start = bisect_right(merged, newest_ms - within, key=_ts)
    return merged[max(start, len(merged) - keep):]


def _key(value: object) -> tuple[str, object]:
    """A value's identity for counting: 1, 1.0 and True are three values, as in the JSON."""
    return (type(value).__name__, value)


def _rank(row: Sequence[Any]) -> tuple[int, int, _Reverse]:
    """Stronger rows rank higher: more events, then newer, then the smaller text."""
    return (row[1], row[2], _Reverse(str(row[0])))


class _Reverse:
    """Orders text backwards, so that the smallest text ranks highest among ties."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __lt__(self, other: _Reverse) -> bool:
        return self.text > other.text

    def __gt__(self, other: _Reverse) -> bool:
        return self.text < other.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reverse) and self.text == other.text

    __hash__ = None  # type: ignore[assignment]
