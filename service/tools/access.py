"""Right of access: `touchflow profile show|export KEY` prints what the engine holds about one
customer, from the RocksDB store of a stopped worker or from the changelog topic.

The profile key (`customer_id:c-42`, or `--customer-id c-42` ...) picks the partition
(Kafka's default partitioner over the key, as the worker does) and so the store
`<data_dir>/<app_id>/profiles/pNNNN` or the changelog partition. With `--from-changelog` that
partition is read from the beginning to its high watermark by the worker's own recovery
(service/stream/recovery.py: the Fetch high watermark, not Tansu's ListOffsets; last value wins, a
null value deletes, records of a stale writer are ignored), keeping only the wanted keys. A
key that is an alias merged into another profile holds a redirect: it is shown, then
followed to the profile it points to (up to 8 hops). `show` prints readable lines, `export`
one JSON document. Expected failures end in one sentence (`AccessError`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Container, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.codec import dumps, dumps_pretty
from schemas.vocabulary import IDENTIFIER_FIELDS
from service.domain.erasure import key_digest
from service.domain.partitioning import partition_for_key
from service.domain.profile import Profile, ProfileFormatError
from service.stream.store import TOMBSTONE_PREFIX, is_profile_key, tombstone_key

if TYPE_CHECKING:
    from service.ops.settings import Settings

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["AccessError", "Holding", "describe", "export", "read_holdings", "register", "render"]

_MAX_HOPS = 8  # redirects followed before a chain is reported as a loop


class AccessError(RuntimeError):
    """The profile cannot be read; the message is one sentence saying why and what to do."""


class Holding:
    """One stored record of a key: its partition, where it was read, the profile, and the
    time of its erasure when a tombstone for the key is held (None: none)."""

    __slots__ = ("erased_ms", "key", "partition", "profile", "source")

    def __init__(self, key: str, partition: int, source: str, profile: Profile | None,
                 erased_ms: int | None = None) -> None:
        self.key, self.partition, self.source, self.profile = key, partition, source, profile
        self.erased_ms = erased_ms


def _erased(raw: bytes | None) -> int | None:
    """A tombstone's value (epoch ms as ASCII digits), or None."""
    return int(raw) if raw is not None and raw.isdigit() else None


def parse_key(text: str) -> str:
    """A profile key `<field>:<value>` with a known identifier field, or `AccessError`."""
    field, sep, value = text.partition(":")
    if not sep or not value or field not in IDENTIFIER_FIELDS:
        raise AccessError(
            f"the key must be <field>:<value> with field one of {', '.join(IDENTIFIER_FIELDS)}"
            " (e.g. customer_id:c-42), or use --customer-id and the like")
    return text


def _decode(key: str, raw: bytes | None) -> Profile | None:
    if raw is None:
        return None
    try:
        return Profile.from_bytes(raw)
    except ProfileFormatError as exc:
        raise AccessError(f"the stored record of this key cannot be read: {exc}") from None


# -- the store of a stopped worker ----------------------------------------------------------


def _store_dir(settings: Settings, partition: int) -> Path:
    return settings.data_dir / settings.app_id / "profiles" / f"p{partition:04d}"


def _read_store(path: Path, key: bytes) -> tuple[bytes | None, bytes | None]:
    """A key's record and its erasure tombstone from a partition's RocksDB (opened, as the
    worker opens it, holding its lock: a running worker's store is refused rather than read
    half-written)."""
    from rocksdict import Options, Rdict

    options = Options(raw_mode=True)
    options.create_if_missing(False)
    try:
        db = Rdict(str(path), options)
    except Exception as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise AccessError(
                f"the profile store at {path} is locked by a running worker; stop it first, or "
                "read the changelog topic with --from-changelog") from None
        raise AccessError(f"cannot open the profile store at {path} ({text})") from None
    try:
        value = db.get(key)
        tombstone = db.get(tombstone_key(key_digest(key.decode())))
        return (None if value is None else bytes(value),
                None if tombstone is None else bytes(tombstone))
    finally:
        db.close()


def _from_store(settings: Settings, key: str) -> Holding:
    root = settings.data_dir / settings.app_id / "profiles"
    if not root.is_dir():
        raise AccessError(
            f"there is no profile store at {root}; check TOUCHFLOW_DATA_DIR and "
            "TOUCHFLOW_APP_ID, or read the changelog topic with --from-changelog")
    partition = partition_for_key(key.encode(), settings.partitions)
    path = _store_dir(settings, partition)
    others = sorted(p for p in root.glob("p[0-9][0-9][0-9][0-9]") if p != path)
    # The owner's store first; then the others, in case TOUCHFLOW_PARTITIONS differs from
    # the partition count the worker ran with.
    erased: Holding | None = None
    for candidate in ([path] if path.is_dir() else []) + others:
        raw, tombstone = _read_store(candidate, key.encode())
        if raw is not None:
            return Holding(key, int(candidate.name[1:]), f"store {candidate}",
                           _decode(key, raw), _erased(tombstone))
        if tombstone is not None and erased is None:
            erased = Holding(key, int(candidate.name[1:]), f"store {candidate}", None,
                             _erased(tombstone))
    return erased or Holding(key, partition, f"store {root}", None)


# -- the changelog topic ----------------------------------------------------------------------


class _KeysOnly:
    """A partition store for recovery that keeps only some profile keys (and its own
    bookkeeping entries): reading a whole partition to answer for one customer."""

    def __init__(self, wanted: Container[bytes]) -> None:
        self.wanted = wanted
        self.data: dict[bytes, bytes] = {}
        self._checkpoint = -1

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, items: Mapping[bytes, bytes | None], checkpoint: int,
              existing: Container[bytes] | None = None) -> None:
        for key, value in items.items():
            if key not in self.wanted and (is_profile_key(key)
                                           or key.startswith(TOMBSTONE_PREFIX)):
                continue
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self._checkpoint = max(self._checkpoint, checkpoint)

    def checkpoint(self) -> int:
        return self._checkpoint

    def count(self) -> int:
        return sum(1 for key in self.data if is_profile_key(key))

    def recount(self) -> None:
        """Counted when asked: nothing to do."""

    def keys(self) -> Iterable[bytes]:
        return [key for key in self.data if is_profile_key(key)]

    def scan(self, prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))

    def close(self) -> None:
        """Nothing to release."""

    def wipe(self) -> None:
        self.data.clear()
        self._checkpoint = -1


async def _changelog_partitions(settings: Settings, topic: str) -> int:
    """The changelog topic's partition count, or `AccessError` (broker down, no topic)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=10_000, **settings.kafka_security())
    try:
        await asyncio.wait_for(consumer.start(), 15)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.topics()  # refresh the metadata once
            partitions = consumer.partitions_for_topic(topic)
    except Exception as exc:
        raise AccessError(
            f"cannot reach the Kafka broker at {settings.broker} ({type(exc).__name__}); "
            "check TOUCHFLOW_BROKER and that the broker is running") from None
    finally:
        await consumer.stop()
    if not partitions:
        raise AccessError(f"the changelog topic {topic} does not exist on {settings.broker}; "
                          "check TOUCHFLOW_APP_ID and TOUCHFLOW_TOPIC_PREFIX")
    return len(partitions)


async def _from_changelog(settings: Settings, topic: str, key: str, partitions: int) -> Holding:
    from service.stream.recovery import recover_partitions

    partition = partition_for_key(key.encode(), partitions)
    tombstone = tombstone_key(key_digest(key))
    store = _KeysOnly({key.encode(), tombstone})
    try:
        await recover_partitions(settings, topic, {partition: store}, timeout_s=120)
    except (TimeoutError, OSError) as exc:
        raise AccessError(f"cannot read the changelog topic {topic} from {settings.broker} "
                          f"({type(exc).__name__}); check that the broker is running") from None
    return Holding(key, partition, f"changelog {topic} partition {partition}",
                   _decode(key, store.get(key.encode())), _erased(store.get(tombstone)))


# -- reading with redirects -----------------------------------------------------------------


def read_holdings(settings: Settings, key: str, *, from_changelog: bool) -> list[Holding]:
    """The key's record, then the records its redirects lead to (an alias merged into a
    profile holds only a redirect); the last one holds the profile, or None."""
    chain: list[Holding] = []
    topic = settings.internal_topic("profiles-changelog")
    partitions = asyncio.run(_changelog_partitions(settings, topic)) if from_changelog else 0
    while True:
        holding = (asyncio.run(_from_changelog(settings, topic, key, partitions))
                   if from_changelog else _from_store(settings, key))
        chain.append(holding)
        target = holding.profile.redirect if holding.profile is not None else None
        if target is None or len(chain) > _MAX_HOPS or any(h.key == target for h in chain):
            return chain
        key = target


# -- rendering -------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    if ms is None or ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def describe(profile: Profile) -> dict[str, Any]:
    """Everything a profile holds, with times as ISO-8601 UTC and short names spelt out."""
    return {
        "key": profile.key,
        "customer_id": profile.cid,
        "erased_before": _iso(profile.erased_ms),
        "redirect_to": profile.redirect,
        "linked_identifiers": list(profile.links),
        "newest_event_at": _iso(profile.newest_ms),
        "utc_offset_minutes": profile.tz_min,
        "events_remembered": profile.seen.size(),
        "events_forgotten_through": _iso(profile.floor_ms),
        "scores": dict(profile.scores),
        "scores_as_of": _iso(profile.sref_ms) if profile.scores else None,
        "score_rule_hits": dict(profile.hits),
        "traits": dict(profile.traits),
        "consent": {name: {"granted": bool(entry[0]), "at": _iso(int(entry[1]))}
                    for name, entry in profile.consent.items()},
        "sent": {action: {"last_sent_at": _iso(int(entry[0])), "times": int(entry[1])}
                 for action, entry in profile.sent.items()},
        "recent_actions": [{"at": _iso(int(entry[0])), "action": entry[1],
                            "action_id": entry[2] if len(entry) > 2 else None}
                           for entry in profile.recent],
        "responses": {action: dict(counts) for action, counts in profile.responses.items()},
        "windows": {pattern: [[_iso(int(entry[0])), *entry[1:]] for entry in entries]
                    for pattern, entries in profile.windows.items()},
    }


def export(requested: str, chain: list[Holding]) -> dict[str, Any]:
    """The JSON document of `profile export`."""
    last = chain[-1]
    return {
        "requested_key": requested,
        "held": last.profile is not None,
        "redirects": [{"key": h.key, "to": h.profile.redirect, "source": h.source}
                      for h in chain[:-1] if h.profile is not None],
        "source": last.source,
        "partition": last.partition,
        "erased_at": _iso(last.erased_ms),
        "profile": describe(last.profile) if last.profile is not None else None,
    }


def _lines(value: Any, indent: str) -> list[str]:
    if isinstance(value, dict):
        if not value:
            return [f"{indent}(none)"]
        out: list[str] = []
        for name, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{indent}{name}:")
                out.extend(_lines(item, indent + "  "))
            else:
                out.append(f"{indent}{name}: {_scalar(item)}")
        return out
    if isinstance(value, list):
        if not value:
            return [f"{indent}(none)"]
        return [f"{indent}- {_scalar(item)}" for item in value]
    return [f"{indent}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return "(none)" if not value else dumps(value).decode()
    return "-" if value is None else str(value)


def render(requested: str, chain: list[Holding]) -> str:
    """The readable text of `profile show`."""
    out = []
    for holding in chain[:-1]:
        assert holding.profile is not None
        out.append(f"{holding.key} is an alias merged into {holding.profile.redirect} "
                   f"({holding.source}); following it.")
    last = chain[-1]
    if last.profile is None:
        erased = f"; erased at {_iso(last.erased_ms)}" if last.erased_ms is not None else ""
        out.append(f"no profile held for {last.key} ({last.source}){erased}.")
        return "\n".join(out)
    out.append(f"profile {last.key} ({last.source})")
    out.extend(_lines(describe(last.profile), "  "))
    return "\n".join(out)


# -- the command -----------------------------------------------------------------------------


def _key_of(args: argparse.Namespace) -> str:
    given = [f"{field}:{value}" for field in IDENTIFIER_FIELDS
             if (value := getattr(args, field, None))]
    if args.key:
        given.append(parse_key(args.key))
    if len(given) != 1:
        raise AccessError("give exactly one profile key: KEY (e.g. customer_id:c-42) or one "
                          "of --customer-id, --loyalty-id, --email-sha256, --phone-sha256, "
                          "--anonymous-id")
    return given[0]


def _cmd_profile(args: argparse.Namespace) -> int:
    import logging

    from service.ops.settings import load_settings

    # The client library logs its connection failures itself; the command says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    if args.partitions:
        overrides["partitions"] = args.partitions
    settings = load_settings(**overrides)
    try:
        key = _key_of(args)
        chain = read_holdings(settings, key, from_changelog=args.from_changelog)
    except AccessError as error:
        print(f"touchflow profile: {error}.", file=sys.stderr)
        return 2
    if args.profile_command == "export":
        sys.stdout.write(dumps_pretty(export(key, chain), sort_keys=False).decode())
    else:
        print(render(key, chain))
    return 0 if chain[-1].profile is not None else 1


def register(subparsers: SubParsers) -> None:
    """Add the `profile show|export` subcommands to the `touchflow` parser."""
    parser = subparsers.add_parser(
        "profile", help="what the engine holds about one customer (right of access)")
    sub = parser.add_subparsers(dest="profile_command", metavar="SUBCOMMAND")
    sub.required = True
    for name, text in (("show", "print the profile of one key, readable"),
                       ("export", "print the profile of one key as JSON")):
        command = sub.add_parser(
            name, help=text, description=f"{text.capitalize()}: from the store of a stopped "
            "worker (TOUCHFLOW_DATA_DIR), or from the changelog topic. Exit code 1 when no "
            "profile is held for the key.")
        command.add_argument("key", nargs="?", help="profile key, e.g. customer_id:c-42")
        for field in IDENTIFIER_FIELDS:
            command.add_argument(f"--{field.replace('_', '-')}", dest=field, metavar="VALUE",
                                 help=f"the key {field}:VALUE")
        command.add_argument("--from-changelog", action="store_true",
                             help="read the changelog topic (TOUCHFLOW_BROKER) instead of the "
                             "local store")
        command.add_argument("--data-dir", metavar="DIR", help="default TOUCHFLOW_DATA_DIR")
        command.add_argument("--partitions", type=int, metavar="N",
                             help="the worker's partition count for the local store; default "
                             "TOUCHFLOW_PARTITIONS (the changelog's own count is read)")
        command.set_defaults(handler=_cmd_profile)
