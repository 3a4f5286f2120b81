"""Identity control records on the repartition topic: after an `identified` event the
profile's partition asks each new alias's partition to link it (`link`); the alias's partition
answers with its history (`merge`) or refuses; an erased profile's aliases forget too (`erase`).
The rules of linking and merging are pure (service/domain/identity.py); this is their I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from schemas.codec import dumps, loads
from schemas.event import Event
from service.batch import Record
from service.domain.identity import (
    MAX_LINKS,
    alias_keys,
    merge_profiles,
    merge_record,
    plan_link,
    refusal_record,
)
from service.domain.profile import Profile
from service.domain.rules import Rulebook
from service.sink import Sink
from service.topics import TopicNames

__all__ = ["CONTROL_HEADER", "IdentityControl", "control_kind"]

CONTROL_HEADER = "tf-ctl"
_KINDS = {b"link": "link", b"merge": "merge", b"erase": "erase"}


def control_kind(message: Record) -> str | None:
    """"link"/"merge"/"erase" for identity control records on the repartition topic."""
    for name, value in message.headers:
        if name == CONTROL_HEADER:
            return _KINDS.get(value)
    return None


class IdentityControl:
    """Sends and applies the control records of one processor (its sink, topics and rulebook;
    `dead_letter(message, reason, error)` takes what cannot be applied)."""

    def __init__(self, sink: Sink, topics: TopicNames, rulebook: Rulebook,
                 partition_for: Callable[[bytes], int],
                 dead_letter: Callable[[Record, str, str], Awaitable[None]]) -> None:
        self.sink = sink
        self.topics = topics
        self.rulebook = rulebook
        self._partition_for = partition_for
        self._dead_letter = dead_letter

    async def request_links(self, profile: Profile, event: Event) -> int:
        """After an `identified` event: ask each new alias's partition to link it here."""
        new = [alias for alias in alias_keys(event) if alias not in profile.links]
        room = MAX_LINKS - len(profile.links)
        refused = 0
        for alias in new[max(room, 0):]:
            refused += 1
            record = refusal_record(
                profile.key, profile.customer_id, event.event_id, event.occurred_at,
                self.rulebook, f"identifier limit of {MAX_LINKS} reached; "
                f"{alias.split(':', 1)[0]} not linked")
            await self.sink.send(self.topics.decisions, profile.key.encode(), dumps(record))
        await self.send_control("link", profile.key, new[:max(room, 0)], event)
        return refused

    async def send_control(self, kind: str, canonical: str, aliases: Sequence[str],
                           event: Event) -> None:
        """One `kind` record per alias, to the partition that owns the alias's key."""
        for alias in aliases:
            target = alias.encode()
            body = {"alias": alias, "canonical": canonical, "event_id": event.event_id,
                    "occurred_at": event.occurred_at}
            await self.sink.send(self.topics.repartition, target, dumps(body),
                                 partition=self._partition_for(target),
                                 headers=[(CONTROL_HEADER, kind.encode())])

    async def apply(self, message: Record, key: bytes, profile: Profile | None,
                    touched: dict[bytes, Profile | None]) -> int:
        """Apply a link, merge or erase record addressed to the profile under `key`."""
        kind = control_kind(message)
        try:
            body = loads(message.value or b"")
            alias, canonical = str(body["alias"]), str(body["canonical"])
            event_id, occurred_at = str(body["event_id"]), str(body["occurred_at"])
        except (ValueError, KeyError, TypeError):
            await self._dead_letter(message, "bad_control", "unreadable identity control record")
            return 0
        rulebook = self.rulebook
        if kind == "link":
            plan = plan_link(alias, profile, canonical)
            if plan.kind == "refuse":
                await self._dead_letter(message, "identity_conflict", plan.reason)
                customer = canonical[12:] if canonical.startswith("customer_id:") else canonical
                record = refusal_record(canonical, customer, event_id, occurred_at, rulebook,
                                        plan.reason)
                await self.sink.send(self.topics.decisions, canonical.encode(), dumps(record))
                return 1
            if plan.kind == "merge":
                history = plan.history.to_dict() if plan.history is not None else None
                target = canonical.encode()
                merge = {"alias": alias, "canonical": canonical, "event_id": event_id,
                         "occurred_at": occurred_at, "history": history}
                await self.sink.send(self.topics.repartition, target, dumps(merge),
                                     partition=self._partition_for(target),
                                     headers=[(CONTROL_HEADER, b"merge")])
                touched[key] = plan.redirect
            return 0
        if kind == "merge":
            base = profile if profile is not None else Profile(canonical)
            raw_history = body.get("history")
            other = Profile.from_bytes(dumps(raw_history)) if raw_history else None
            merged, changed = merge_profiles(base, alias, other, rulebook)
            if changed:
                touched[key] = merged
                record = merge_record(merged, alias, event_id, occurred_at, rulebook)
            elif alias in base.links:
                return 0
            else:
                record = refusal_record(canonical, base.customer_id, event_id, occurred_at,
                                        rulebook, f"identifier limit of {MAX_LINKS} reached")
            await self.sink.send(self.topics.decisions, key, dumps(record))
            return 1
        # erase: the alias of an erased profile forgets everything too (tombstone).
        if profile is not None and profile.redirect == canonical:
            touched[key] = None
        return 0
