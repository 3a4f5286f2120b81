"""Capacity across customers: limits per action, group or channel and period, exact under
partitions, without a round trip per decision.

Each (constraint, period) has an *owner*: the partition that owns the key
`capacity:<name>:<period>` (the period is the event time divided by the constraint's `per`,
0 for a total limit). The owner keeps the pool (what is not yet granted) and grants quotas,
ahead of need, to the partitions that ask; a partition decides locally while it holds quota,
asks again when what it holds falls to a low-water mark, and returns what it did not use once
its event time is past the period's end (plus `CLOSE_GRACE_MS`). Asks, grants and
returns are `QuotaMessage`s the driver sends as control records on the repartition topic to
the partition named in them.

Exactness: only the owner creates quota (a grant is taken from its pool), a partition spends
only what was granted to it, and every message carries an id so that a redelivered or
re-sent one changes nothing: the owner answers a known ask with the grant it recorded, applies
a return once, and a holder applies only the grant it is waiting for. Both sides' state is the
partition's `CapacityState`, stored and changelogged with its profiles (like the learned
tallies), so after a crash the state and the records it had sent agree again once the inputs
are redelivered. Hence: spent + held + pool == limit at the owner's and holders' committed
state, and what all partitions spend in a period never exceeds the limit.

decide() stays pure: the driver puts the partition's state in the context under
`CAPACITY_CONTEXT`; arbitration (policy.py) calls `take` for an action that would be sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from service.domain.partitioning import partition_for_key

__all__ = ["CAPACITY_CONTEXT", "CapacityState", "Constraint", "QuotaMessage", "owner_key",
           "with_quota"]

CAPACITY_CONTEXT = "\x00capacity"  # the context key the driver puts the partition's state under
KEEP_PERIODS = 48  # an owner remembers this many periods of a constraint (duplicates' ids)
# Event-time slack after a period's end before a partition hands back what it holds of it
# (a later event of that period asks again: the pool has it back).
CLOSE_GRACE_MS = 60_000
DRY_RETRY = 8  # after an empty grant, ask again only every this many demands (or ask size)


class Constraint:
    """A compiled `capacity` entry: at most `limit` actions of the scope per period."""

    __slots__ = ("chunk", "limit", "name", "period_ms", "scope", "suppress", "target")

    def __init__(self, name: str, scope: str, target: str, limit: int, period_ms: int,
                 suppress: bool, chunk: int) -> None:
        self.name = name
        self.scope = scope  # "action", "group" or "channel"
        self.target = target
        self.limit = limit
        self.period_ms = period_ms  # 0: a total limit, one period for ever
        self.suppress = suppress  # when reached: suppress (and stop arbitration), else fall back
        self.chunk = max(0, chunk)  # asked for at a time (0: limit / (4 x partitions), >= 1)

    def period(self, ts_ms: int) -> int:
        return ts_ms // self.period_ms if self.period_ms else 0

    def covers(self, name: str, group: str | None, channel: str) -> bool:
        if self.scope == "action":
            return name == self.target
        if self.scope == "group":
            return group == self.target
        return channel == self.target

    def describe(self) -> str:
        per = f"per {_span(self.period_ms)}" if self.period_ms else "total"
        return f"capacity {self.name} ({self.limit} {per})"


def _span(millis: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def owner_key(name: str, period: int) -> bytes:
    """The key whose partition owns a constraint's period (Kafka's default partitioner)."""
    return f"capacity:{name}:{period}".encode()


class QuotaMessage(NamedTuple):
    """A record for the partition `partition` (Kafka key `key`, value `body`)."""

    partition: int
    key: bytes
    body: bytes


def with_quota(context: Mapping[str, Any], state: CapacityState | None) -> Mapping[str, Any]:
    """The context a decision reads, with the partition's capacity state (None: no limits);
    a big context is wrapped, not copied (this runs for every event)."""
    if state is None:
        return context
    if len(context) < 64:
        return {**context, CAPACITY_CONTEXT: state}
    return _WithQuota(context, state)


class _WithQuota(Mapping[str, Any]):
    """A context plus the capacity state under `CAPACITY_CONTEXT`, without copying it."""

    __slots__ = ("_base", "_state")

    def __init__(self, base: Mapping[str, Any], state: CapacityState) -> None:
        self._base = base
        self._state = state

    def __getitem__(self, key: str) -> Any:
        if key == CAPACITY_CONTEXT:
            return self._state
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        yield CAPACITY_CONTEXT
        yield from (k for k in self._base if k != CAPACITY_CONTEXT)

    def __len__(self) -> int:
        return len(self._base) + (CAPACITY_CONTEXT not in self._base)


class CapacityState:
    """One partition's capacity state: the pools it owns and the quotas it holds.

    Holding (per constraint and period): `g` granted, `s` spent, `r` returned, `a` asks made,
    `k` grants applied (an ask is in flight while a > k), `dry` the last grant was empty,
    `miss` demands since. Pool: `left` not granted, `asks` id -> amount granted, `rets` ids of
    returns applied. `rets` (holder): returns not yet confirmed by their owner.

    Why these ids survive a crash: a partition's inputs come from two topics (events, and
    these records on the repartition topic), and after a crash they may interleave otherwise,
    so a retried batch may act differently from the lost one whose records already left. The
    owner's pool depends on its records only (one partition of one topic: same order on
    redelivery). An ask carries no choice (the k-th ask of a holding is always `ask_size`), so
    the holder adopts the grant of an ask the lost batch made (grant k+1 when k were applied).
    A return depends on what was spent, so it leaves only once the state that made it is
    durable (`held_back`, sent by the driver after the batch's store write; replay sends it at
    once), and is sent again until confirmed.
    """

    __slots__ = ("boundary", "constraints", "dirty", "due", "floor", "grace_ms", "held_back",
                 "holds", "newest", "outbox", "partition", "partitions", "pools", "rets", "seq")

    def __init__(self, constraints: Mapping[str, Constraint], partition: int, partitions: int,
                 grace_ms: int = CLOSE_GRACE_MS) -> None:
        self.constraints = constraints
        self.partition = partition
        self.partitions = partitions
        self.grace_ms = grace_ms  # how long after a period's end a late event may still spend
        self.holds: dict[tuple[str, int], dict[str, Any]] = {}
        self.pools: dict[tuple[str, int], dict[str, Any]] = {}
        self.floor: dict[str, int] = {}  # per constraint: older periods are forgotten
        self.seq = 0
        self.newest = -(2**62)  # the newest event time seen
        self.due = -(2**62)  # the event time from which `advance` has holdings to close
        self.boundary = -(2**62)  # the next period start of any constraint
        self.outbox: list[QuotaMessage] = []  # to send (the driver drains it)
        self.held_back: list[QuotaMessage] = []  # to send once this state is durable
        self.rets: dict[str, list[Any]] = {}  # return id -> [constraint, period, amount]
        self.dirty = False

    # -- the holder's side -------------------------------------------------------------------

    def advance(self, ts_ms: int) -> None:
        """The partition applies an event dated `ts_ms`: ask ahead for the period it enters
        where it spent in the previous one, and hand back what it holds of periods that ended
        more than the grace ago."""
        if ts_ms <= self.newest:
            return
        before, self.newest = self.newest, ts_ms
        if ts_ms < self.boundary and ts_ms < self.due:
            return  # (every event's path: no period entered, nothing to close)
        self.boundary = min((c.period(ts_ms) + 1) * c.period_ms
                            for c in self.constraints.values() if c.period_ms) \
            if any(c.period_ms for c in self.constraints.values()) else 2**62
        for name, entering in self.constraints.items():
            current = entering.period(ts_ms)
            if entering.period_ms and current != entering.period(before):
                last = self.holds.get((name, current - 1))
                if last is not None and last["s"] and (name, current) not in self.holds:
                    self._ask(entering, current, self._hold(name, current))  # ahead of need
        if ts_ms < self.due:
            return
        due = 2**62
        for (name, period), hold in list(self.holds.items()):
            constraint = self.constraints.get(name)
            if constraint is None or not constraint.period_ms:
                continue
            closes = (period + 1) * constraint.period_ms + self.grace_ms
            if closes > ts_ms:
                due = min(due, closes)
                continue
            if hold["done"]:
                continue
            self._give_back(name, period, hold)
            if hold["a"] == hold["k"]:
                hold["done"] = True  # (until a late event or grant reopens it)
            else:
                due = min(due, ts_ms + 1)
        for name, constraint in self.constraints.items():
            if constraint.period_ms:
                self._forget(name, constraint.period(ts_ms))
        self.due = due

    def take(self, constraints: Sequence[Constraint], ts_ms: int) -> Constraint | None:
        """Spend one unit of each of `constraints` for an action sent at `ts_ms`; the first
        one without quota instead (nothing spent), after asking for more."""
        holds = []
        blocked = None
        for constraint in constraints:
            period = constraint.period(ts_ms)
            size = constraint.period_ms
            if size and ts_ms >= (period + 1) * size - size // 4 \
                    and (constraint.name, period + 1) not in self.holds:
                # demand in the period's last quarter: quota for the next one, ahead of need
                self._ask(constraint, period + 1, self._hold(constraint.name, period + 1))
            hold = self._hold(constraint.name, period)
            holds.append((constraint, period, hold))
            if hold["g"] - hold["s"] - hold["r"] <= 0 and blocked is None:
                blocked = constraint
        if blocked is not None:
            for constraint, period, hold in holds:
                if hold["g"] - hold["s"] - hold["r"] <= 0:
                    self._want(constraint, period, hold)
            return blocked
        for constraint, period, hold in holds:
            hold["s"] += 1
            self.dirty = True
            if hold["g"] - hold["s"] - hold["r"] <= self.ask_size(constraint) // 2:
                self._want(constraint, period, hold)
        return None

    def spent(self, name: str, period: int) -> int:
        """What this partition spent of a constraint's period."""
        hold = self.holds.get((name, period))
        return int(hold["s"]) if hold is not None else 0

    def held(self, name: str, period: int) -> int:
        """What this partition holds unspent of a constraint's period."""
        hold = self.holds.get((name, period))
        return int(hold["g"] - hold["s"] - hold["r"]) if hold is not None else 0

    def _hold(self, name: str, period: int) -> dict[str, Any]:
        hold = self.holds.get((name, period))
        if hold is None:
            hold = self.holds[(name, period)] = {"g": 0, "s": 0, "r": 0, "a": 0, "k": 0,
                                                  "dry": False, "miss": 0, "done": False}
            self.dirty = True
            self.due = -(2**62)  # a new holding: look again at the next event
        elif hold["done"]:
            hold["done"] = False
            self.due = -(2**62)
        return hold

    def _want(self, constraint: Constraint, period: int, hold: dict[str, Any]) -> None:
        """Demand without (enough) quota: ask, unless an ask is in flight; after an empty
        grant, only every `DRY_RETRY` demands (the pool may have been refilled by a return)."""
        if hold["a"] > hold["k"]:
            return
        if hold["dry"]:
            hold["miss"] += 1
            self.dirty = True
            if hold["miss"] < max(DRY_RETRY, self.ask_size(constraint)):
                return
        self._ask(constraint, period, hold)

    def _ask(self, constraint: Constraint, period: int, hold: dict[str, Any]) -> None:
        hold["a"] += 1
        hold["miss"] = 0
        self.dirty = True
        self.outbox.append(self._to_owner(constraint.name, period, {
            "op": "ask", "id": f"{self.partition}.{hold['a']}", "k": hold["a"],
            "n": self.ask_size(constraint)}))

    def ask_size(self, constraint: Constraint) -> int:
        """Units per ask: the rulebook's `quota`, else a quarter of a fair share per
        partition (small asks strand little; the low-water mark keeps them ahead)."""
        return constraint.chunk or max(1, constraint.limit // (4 * self.partitions))

    def _give_back(self, name: str, period: int, hold: dict[str, Any]) -> None:
        unused = hold["g"] - hold["s"] - hold["r"]
        if unused <= 0 or hold["a"] > hold["k"]:
            return  # (an ask in flight: its grant is given back when it arrives)
        self.seq += 1
        ident = f"{self.partition}.r{self.seq}"
        hold["r"] += unused
        self.rets[ident] = [name, period, unused]
        self.dirty = True
        self.held_back.append(self._to_owner(name, period, {"op": "ret", "id": ident,
                                                           "n": unused}))

    def resend(self) -> None:
        """Send again the returns not yet confirmed (the driver calls it on loading a state
        and may call it any time: the owner applies each once)."""
        for ident, (name, period, amount) in sorted(self.rets.items()):
            self.outbox.append(self._to_owner(str(name), int(period), {
                "op": "ret", "id": ident, "n": int(amount)}))

    def _to_owner(self, name: str, period: int, body: dict[str, Any]) -> QuotaMessage:
        key = owner_key(name, period)
        return QuotaMessage(partition_for_key(key, self.partitions), key, orjson.dumps(
            {**body, "c": name, "p": period, "from": self.partition}))

    # -- records from other partitions -------------------------------------------------------

    def receive(self, body: bytes) -> str | None:
        """Apply an ask, grant or return addressed to this partition; an error text when the
        record cannot be read (the driver dead-letters it)."""
        try:
            record = orjson.loads(body)
            op, name, period = str(record["op"]), str(record["c"]), int(record["p"])
            ident, sender = str(record["id"]), int(record["from"])
            amount = int(record.get("n", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return "unreadable capacity record"
        constraint = self.constraints.get(name)
        if constraint is None:
            return None  # a constraint the rulebook no longer has: nothing to keep
        if op == "grant":
            self._granted(constraint, period, int(record.get("k", 0)), amount)
        elif op == "retok":
            if self.rets.pop(ident, None) is not None:
                self.dirty = True
        elif op in ("ask", "ret"):
            self._own(constraint, period, op, ident, amount, sender)
        else:
            return f"unknown capacity record {op!r}"
        return None

    def _granted(self, constraint: Constraint, period: int, number: int, amount: int) -> None:
        if period < self.floor.get(constraint.name, -(2**62)):
            return
        hold = self._hold(constraint.name, period)
        if number != hold["k"] + 1:
            return  # a duplicate (or out of turn: its ask will be answered again)
        hold["k"] = number
        hold["a"] = max(hold["a"], number)  # an ask a lost batch made: adopted
        hold["g"] += max(0, amount)
        hold["dry"] = amount <= 0
        self.dirty = True
        if constraint.period_ms and \
                (period + 1) * constraint.period_ms + self.grace_ms <= self.newest:
            self._give_back(constraint.name, period, hold)

    def _own(self, constraint: Constraint, period: int, op: str, ident: str, amount: int,
             sender: int) -> None:
        name = constraint.name
        if period < self.floor.get(name, -(2**62)):
            if op == "ask":  # forgotten long ago: nothing left to grant
                self._reply(name, period, sender, ident, 0)
            else:
                self.outbox.append(QuotaMessage(sender, owner_key(name, period), orjson.dumps(
                    {"op": "retok", "c": name, "p": period, "id": ident,
                     "from": self.partition})))
            return
        pool = self.pools.get((name, period))
        if pool is None:
            pool = self.pools[(name, period)] = {"left": constraint.limit, "asks": {},
                                                  "rets": []}
            self._forget(name, period)
        self.dirty = True
        if op == "ask":
            granted = pool["asks"].get(ident)
            if granted is None:  # a new ask (a known one is answered again, the same)
                granted = min(max(0, amount), pool["left"])
                pool["left"] -= granted
                pool["asks"][ident] = granted
            self._reply(name, period, sender, ident, granted)
            return
        if ident not in pool["rets"]:
            pool["rets"].append(ident)
            pool["left"] += max(0, amount)
        self.outbox.append(QuotaMessage(sender, owner_key(name, period), orjson.dumps(
            {"op": "retok", "c": name, "p": period, "id": ident, "from": self.partition})))

    def _reply(self, name: str, period: int, sender: int, ident: str, amount: int) -> None:
        number = int(ident.rsplit(".", 1)[1]) if "." in ident else 0
        self.outbox.append(QuotaMessage(sender, owner_key(name, period), orjson.dumps(
            {"op": "grant", "c": name, "p": period, "id": ident, "k": number, "n": amount,
             "from": self.partition})))

    def _forget(self, name: str, period: int) -> None:
        """Keep `KEEP_PERIODS` periods of a constraint, owned and held."""
        floor = period - KEEP_PERIODS + 1
        if floor <= self.floor.get(name, -(2**62)):
            return
        self.floor[name] = floor
        for table in (self.pools, self.holds):
            for key in [k for k in table if k[0] == name and k[1] < floor]:
                del table[key]

    def pool_left(self, name: str, period: int) -> int | None:
        """What the owner has not granted of a period (None: not owned here, or never asked)."""
        pool = self.pools.get((name, period))
        return int(pool["left"]) if pool is not None else None

    def report(self) -> list[tuple[Constraint, int, int, int, int | None]]:
        """Per constraint, for the period of the newest event time seen: (constraint,
        period, spent here, held here, pool left here or None) for metrics."""
        out = []
        for name, constraint in sorted(self.constraints.items()):
            period = constraint.period(max(self.newest, 0))
            out.append((constraint, period, self.spent(name, period), self.held(name, period),
                        self.pool_left(name, period)))
        return out

    # -- the stored form ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The stored form (the partition's store and changelog)."""
        return orjson.dumps({
            "v": 1, "seq": self.seq, "newest": self.newest, "floor": self.floor,
            "rets": self.rets,
            "holds": [[n, p, h] for (n, p), h in sorted(self.holds.items())],
            "pools": [[n, p, q] for (n, p), q in sorted(self.pools.items())]})

    @classmethod
    def from_bytes(cls, data: bytes, constraints: Mapping[str, Constraint], partition: int,
                   partitions: int, grace_ms: int = CLOSE_GRACE_MS) -> CapacityState:
        raw = orjson.loads(data)
        state = cls(constraints, partition, partitions, grace_ms)
        state.seq = int(raw["seq"])
        state.newest = int(raw["newest"])
        state.floor = {str(k): int(v) for k, v in raw.get("floor", {}).items()}
        state.holds = {(str(n), int(p)): dict(h) for n, p, h in raw.get("holds", [])}
        state.pools = {(str(n), int(p)): dict(q) for n, p, q in raw.get("pools", [])}
        state.rets = {str(k): list(v) for k, v in raw.get("rets", {}).items()}
        return state
