"""Scores and traits: compiled from the rulebook, applied to a profile one event at a time.

Scores. Each points rule matches events and adds `add` points (times a numeric event field
when `per` is set) to its score; `max_times` limits how often a rule pays per customer and
`nth` pays only on the n-th matching event (e.g. "a second download +5"). `cap` and `floor`
clamp the score after every change. With `half_life`, a score decays in event time: all decayed
scores of a profile are expressed at one reference time (`Profile.sref_ms`); points from an
event older than that time are discounted by their age, so decayed sums do not depend on the
arrival order (clamping aside).

Traits. Values derived from the customer's own events: `last` (the field's value at the newest
event time, arrival order does not matter), `count`, `sum`, `max`, `min`, `mean`, `distinct`
(a bounded set of the newest distinct values, emptied by `clear_when`). `bands` turns a numeric
trait into a label (the band with the highest lower bound not above the value). `top` keeps the
most frequent value; with `within`, a trait is read over a sliding event-time window
(windowed.py).
"""

from __future__ import annotations

from schemas.event import Event
from service.domain.fields import EventMatch, Getter, compile_event_getter, fmt, is_number
from service.domain.profile import Profile
from service.domain.windowed import fold_top, fold_window, read_top, read_window

__all__ = ["PointRule", "Trait", "apply_points", "awarded"]


def awarded(matches: int, max_times: int | None, nth: int | None) -> int:
    """How many times a rule with `matches` matches so far has paid."""
    if nth is not None:
        return 1 if matches >= nth else 0
    if max_times is not None:
        return min(matches, max_times)
    return matches


class PointRule:
    """A compiled points rule of one score."""

    __slots__ = ("add", "cap", "decayed", "floor", "half_life", "key", "label", "match",
                 "max_times", "nth", "per", "per_path", "score")

    def __init__(self, score: str, label: str, match: EventMatch, add: float,
                 per: str | None, max_times: int | None, nth: int | None,
                 cap: float | None, floor: float | None, half_life: int | None,
                 decayed: tuple[tuple[str, int], ...]) -> None:
        self.score = score
        self.label = label
        self.key = f"{score}/{label}"
        self.match = match
        self.add = add
        self.per_path = per
        self.per: Getter | None = compile_event_getter(per) if per else None
        self.max_times = max_times
        self.nth = nth
        self.cap = cap
        self.floor = floor
        self.half_life = half_life
        self.decayed = decayed  # every decayed score of the rulebook: (name, half-life)

    def text(self) -> str:
        """'+10 (forum)' for explanations."""
        return f"{'+' if self.add >= 0 else ''}{fmt(self.add)} ({self.label})"


def apply_points(profile: Profile, event: Event, rule: PointRule) -> bool:
    """Apply `rule` to `profile` if it matches `event` (whose type the caller already matched
    through the rulebook's type index); True if the score changed."""
    if not rule.match.rest(event):
        return False
    hits = profile.hits
    count = hits.get(rule.key, 0) + 1
    limit = rule.nth or rule.max_times
    if limit is not None and count > limit:
        return False  # stop counting once a limited rule can no longer pay
    hits[rule.key] = count
    if rule.nth is not None and count != rule.nth:
        return False
    points = rule.add
    if rule.per is not None:
        factor = rule.per(event)
        if not is_number(factor):
            return False
        points *= factor
    scores = profile.scores
    ts = event.ts_ms
    if rule.half_life:
        sref = profile.sref_ms
        if ts > sref:
            if sref >= 0:
                for name, half_life in rule.decayed:
                    value = scores.get(name)
                    if value:
                        scores[name] = value * 0.5 ** ((ts - sref) / half_life)
            profile.sref_ms = ts
        elif ts < sref:
            points *= 0.5 ** ((sref - ts) / rule.half_life)
    value = scores.get(rule.score, 0.0) + points
    if rule.cap is not None and value > rule.cap:
        value = rule.cap
    if rule.floor is not None and value < rule.floor:
        value = rule.floor
    scores[rule.score] = float(value)
    return True


class Trait:
    """A compiled trait: `update(profile, event)` on matching events, `read(profile)`."""

    __slots__ = ("bands", "clear", "default", "field", "field_path", "keep", "kind", "match",
                 "max_items", "name", "within")

    def __init__(self, name: str, kind: str, field: str | None, match: EventMatch | None,
                 clear: EventMatch | None, max_items: int, bands: dict[str, float] | None,
                 default: object, within: int | None = None, keep: int = 100) -> None:
        self.name = name
        self.kind = kind
        self.field_path = field
        self.field: Getter | None = (
            compile_event_getter(field) if field else None
        )
        self.match = match
        self.clear = clear
        self.max_items = max_items
        self.bands = sorted(bands.items(), key=lambda kv: (-kv[1], kv[0])) if bands else None
        self.default = default
        self.within = within  # a sliding window in event time (ms), or None
        self.keep = keep  # windowed: at most this many newest matching events

    @property
    def folds(self) -> bool:
        """True when `fold` updates this trait (windowed or top), not the inline kinds."""
        return self.within is not None or self.kind == "top"

    def fold(self, profile: Profile, event: Event) -> None:
        """Fold a matching event into a windowed or `top` trait (windowed.py)."""
        value = self.field(event) if self.field is not None else None
        if self.within is not None:
            fold_window(profile, self.name, self.kind, self.within, self.keep, value,
                        event.ts_ms)
        elif value is not None:
            fold_top(profile, self.name, self.max_items, value, event.ts_ms)

    def types(self) -> frozenset[str] | None:
        """Event types that can change this trait (None: any type)."""
        if self.match is None or self.match.types is None:
            return None
        if self.clear is not None:
            if self.clear.types is None:
                return None
            return self.match.types | self.clear.types
        return self.match.types

    def update(self, profile: Profile, event: Event) -> None:
        """Fold one event into the trait."""
        traits = profile.traits
        name = self.name
        if self.clear is not None and self.clear.test(event):
            traits.pop(name, None)
            return
        if self.match is not None and not self.match.test(event):
            return
        kind = self.kind
        if self.within is not None or kind == "top":
            self.fold(profile, event)
            return
        if kind == "count":
            traits[name] = traits.get(name, 0) + 1
            return
        value = self.field(event) if self.field is not None else None
        if value is None:
            return
        if kind == "last":
            current = traits.get(name)
            if current is None or event.ts_ms >= current[1]:
                traits[name] = [value, event.ts_ms]
            return
        if kind == "distinct":
            if not isinstance(value, str | int | float | bool):
                return
            items = traits.get(name)
            if items is None:
                traits[name] = [value]
            elif value not in items:
                items.append(value)
                if len(items) > self.max_items:
                    del items[0]
            return
        if not is_number(value):
            return
        current = traits.get(name)
        if kind == "sum":
            traits[name] = (current or 0) + value
        elif kind == "max":
            traits[name] = value if current is None or value > current else current
        elif kind == "min":
            traits[name] = value if current is None or value < current else current
        else:  # mean
            traits[name] = [value, 1] if current is None else [current[0] + value, current[1] + 1]

    def read(self, profile: Profile) -> object:
        """The trait's value for conditions and templates (banded if `bands` is set)."""
        raw = profile.traits.get(self.name)
        if self.within is not None:
            value: object = read_window(profile, raw, self.kind, self.within)
        elif self.kind == "top":
            value = read_top(raw)
        elif raw is None:
            value = 0 if self.kind in ("count", "sum") else None
        elif self.kind == "last":
            value = raw[0]
        elif self.kind == "mean":
            value = raw[0] / raw[1]
        else:
            value = raw
        if self.bands is not None and is_number(value):
            for label, lower in self.bands:
                if value >= lower:
                    return label
            return self.default
        return self.default if value is None else value
