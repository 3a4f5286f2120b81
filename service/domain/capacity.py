"""Capacity across customers: limits per action, group or channel and period, exact under
partitions, without a round trip per decision.

Each (constraint, period) has an *owner*: the partition that owns the key
`capacity:<name>:<period>` (the period is the event time divided by the constraint's `per`,
0 for a total limit). Every partition starts a period holding its `share` (computed, not
sent); the owner's pool holds the rest and grants quotas to the partitions that ask. A
partition decides locally while it holds quota, asks again when what it holds falls to a
low-water mark, and returns what it did not use once its event time is past the period's end
(plus `CLOSE_GRACE_MS`). An ask the pool cannot fill, from a partition that turned demand
away, makes the owner recall unspent quota from the others first. Asks, grants, recalls and
returns are `QuotaMessage`s the driver sends as control records on the repartition topic to
the partition named in them.

Exactness: only the owner creates quota (a grant is taken from its pool, shares are the
limit less the pool's start), a partition spends only what it holds, and every message
carries an id so that a redelivered or re-sent one changes nothing: the owner answers a known
ask with the grant it recorded, applies a return once, and a holder applies only the grant it
is waiting for. Both sides' state is the partition's `CapacityState`, stored and changelogged
with its profiles (like the learned tallies), so after a crash the state and the records it
had sent agree again once the inputs are redelivered. Hence: spent + held + pool == limit at
the owner's and holders' committed state, and what all partitions spend in a period never
exceeds the limit. The actions that spent it leave only once that state is durable (`defer`).

decide() stays pure: the driver puts the partition's state in the context under
`CAPACITY_CONTEXT`; arbitration (policy.py) calls `take` for an action that would be sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypedDict

from schemas.codec import JSONDecodeError, dumps, loads
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


class Holding(TypedDict):
    """A partition's quota of one constraint's period (see `CapacityState`)."""

    g: int
    s: int
    r: int
    a: int
    k: int
    dry: bool
    miss: int
    done: bool
    rc: int
    sr: int
    pre: bool
    w: int


class Waiting(TypedDict):
    """An ask the owner's pool could not fill yet (see `CapacityState._serve`)."""

    id: str
    sender: int
    n: int
    done: int  # recalls made for it
    rounds: int  # recalls it may make


class Pool(TypedDict):
    """What the owner of one constraint's period granted (see `CapacityState`)."""

    left: int
    asks: dict[str, int]
    rets: list[str]
    d: dict[str, int]
    sp: dict[str, int]
    wait: list[Waiting]
    out: list[int]
    rc: int


class CapacityState:
    """One partition's capacity state: the pools it owns, the quotas it holds, and the
    actions that spent some of it and wait for this state to be durable before they leave.

    Holding (per constraint and period): `g` granted, from the start the partition's implicit
    `share`; `s` spent, `r` returned, `a` asks made, `k` grants applied (an ask is in flight
    while a > k), `dry` the last grant was empty, `miss` demands since, `rc` the last recall
    answered and `sr` what was spent then, `pre` the last ask was ahead of need, `w` demands
    it could not serve. Pool: `left` not granted, from the start the limit less every
    partition's share; `asks` id -> amount granted, `rets` ids of returns applied, `d` per
    partition what it was granted less what it returned, `sp` per partition what it had
    spent by its last return, `wait` asks waiting for a recall's answers (`Waiting`), `out`
    the partitions recalled that have not answered, `rc` recalls made. `rets` (holder):
    returns not yet confirmed by their owner. `pending`: action id -> what the driver needs
    to send it (`defer`).

    Why these ids survive a crash: a partition's inputs come from two topics (events, and
    these records on the repartition topic), and after a crash they may interleave otherwise,
    so a retried batch may act differently from the lost one whose records already left. The
    owner's pool depends on its records only (one partition of one topic: same order on
    redelivery). An ask carries no choice (the k-th ask of a holding is always `ask_size`), so
    the holder adopts the grant of an ask the lost batch made (grant k+1 when k were applied).
    A return depends on what was spent, so it leaves only once the state that made it is
    durable (`held_back`, sent by the driver after the batch's store write; replay sends it at
    once), and is sent again until confirmed. So does an action that spent quota
    (`pending`): sent after the store write, re-sent on loading the state until the driver
    says it was acknowledged (`delivered`); a lost batch's spend therefore never reaches the
    actions topic.
    """

    __slots__ = ("constraints", "dirty", "due", "floor", "fresh", "grace_ms",
                 "held_back", "holds", "newest", "outbox", "partition", "partitions",
                 "pending", "pools", "rets", "seq")

    def __init__(self, constraints: Mapping[str, Constraint], partition: int, partitions: int,
                 grace_ms: int = CLOSE_GRACE_MS) -> None:
        self.constraints = constraints
        self.partition = partition
        self.partitions = partitions
        self.grace_ms = grace_ms  # how long after a period's end a late event may still spend
        self.holds: dict[tuple[str, int], Holding] = {}
        self.pools: dict[tuple[str, int], Pool] = {}
        self.floor: dict[str, int] = {}  # per constraint: older periods are forgotten
        self.seq = 0
        self.newest = -(2**62)  # the newest event time seen
        self.due = -(2**62)  # the event time from which `advance` has holdings to close
        self.outbox: list[QuotaMessage] = []  # to send (the driver drains it)
        self.held_back: list[QuotaMessage] = []  # to send once this state is durable
        # return id -> [constraint, period, amount, recall answered, spent]
        self.rets: dict[str, list[str | int]] = {}
        self.pending: dict[str, Any] = {}  # action id -> the driver's payload, until delivered
        self.fresh: list[str] = []  # action ids deferred since the driver last looked
        self.dirty = False

    # -- the holder's side -------------------------------------------------------------------

    def advance(self, ts_ms: int) -> None:
        """The partition applies an event dated `ts_ms`: hand back what it holds of periods
        that ended more than the grace ago."""
        if ts_ms <= self.newest:
            return
        self.newest = ts_ms
        if ts_ms < self.due:
            return  # (every event's path: nothing to close)
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
            hold = self._hold(constraint.name, period)
            holds.append((constraint, period, hold))
            if hold["g"] - hold["s"] - hold["r"] <= 0 and blocked is None:
                blocked = constraint
        if blocked is not None:
            for constraint, period, hold in holds:
                if hold["g"] - hold["s"] - hold["r"] <= 0:
                    hold["w"] += 1
                    self._want(constraint, period, hold, False)
            return blocked
        for constraint, period, hold in holds:
            hold["s"] += 1
            self.dirty = True
            if hold["g"] - hold["s"] - hold["r"] <= self.ask_size(constraint) // 2:
                self._want(constraint, period, hold, True)  # the low-water mark: ahead
        return None

    def defer(self, ident: str, payload: Any) -> None:
        """Keep an action that spent quota until this state is durable: the driver sends it
        after its store write (ids in `fresh`), again after loading the state, until
        `delivered`. `payload` (JSON) is what the driver needs to send it."""
        self.pending[ident] = payload
        self.fresh.append(ident)
        self.dirty = True

    def delivered(self, idents: Sequence[str]) -> None:
        """Actions the broker acknowledged: no longer re-sent."""
        for ident in idents:
            if self.pending.pop(ident, None) is not None:
                self.dirty = True

    def spent(self, name: str, period: int) -> int:
        """What this partition spent of a constraint's period."""
        hold = self.holds.get((name, period))
        return int(hold["s"]) if hold is not None else 0

    def held(self, name: str, period: int) -> int:
        """What this partition holds unspent of a constraint's period (its share until it
        first touches the period)."""
        hold = self.holds.get((name, period))
        if hold is not None:
            return int(hold["g"] - hold["s"] - hold["r"])
        constraint = self.constraints.get(name)
        if constraint is None or period < self.floor.get(name, -(2**62)):
            return 0
        return self.share(constraint, period)

    def share(self, constraint: Constraint, period: int, partition: int | None = None) -> int:
        """What a partition holds of a period before it asks (so its first demand needs no
        round trip): `shared` split evenly, the remainder to partitions in turn by period."""
        where = self.partition if partition is None else partition
        base, extra = divmod(self.shared(constraint), self.partitions)
        return base + (1 if (where - period) % self.partitions < extra else 0)

    def shared(self, constraint: Constraint) -> int:
        """The part of each period's limit that starts out with the partitions (one ask's
        worth each, at most the limit); the owner's pool starts with the rest."""
        return min(constraint.limit, self.partitions * self.ask_size(constraint))

    def _hold(self, name: str, period: int) -> Holding:
        hold = self.holds.get((name, period))
        if hold is None:
            below = period < self.floor.get(name, -(2**62))  # forgotten: its share was used
            hold = self.holds[(name, period)] = {
                "g": 0 if below else self.share(self.constraints[name], period), "s": 0,
                "r": 0, "a": 0, "k": 0, "dry": False, "miss": 0, "done": False, "rc": 0,
                "sr": 0, "pre": False, "w": 0}
            self.dirty = True
            self.due = -(2**62)  # a new holding: look again at the next event
        elif hold["done"]:
            hold["done"] = False
            self.due = -(2**62)
        return hold

    def _want(self, constraint: Constraint, period: int, hold: Holding,
              ahead: bool) -> None:
        """Demand without (enough) quota: ask, unless an ask is in flight; after an empty
        grant, only every `DRY_RETRY` demands (the pool may have been refilled by a return).
        `ahead`: asked at the low-water mark, before any demand went without."""
        if hold["a"] > hold["k"]:
            return
        if hold["dry"]:
            hold["miss"] += 1
            self.dirty = True
            if hold["miss"] < max(DRY_RETRY, self.ask_size(constraint)):
                return
        self._ask(constraint, period, hold, ahead)

    def _ask(self, constraint: Constraint, period: int, hold: Holding,
             ahead: bool) -> None:
        hold["a"] += 1
        hold["miss"] = 0
        hold["pre"] = ahead
        self.dirty = True
        body: dict[str, str | int] = {"op": "ask", "id": f"{self.partition}.{hold['a']}",
                                      "k": hold["a"], "n": self.ask_size(constraint)}
        if ahead:
            body["pre"] = 1
        elif hold["w"] > 1 or (constraint.period_ms and (self.newest - period * \
                constraint.period_ms) * 2 >= constraint.period_ms):
            body["all"] = 1  # demand goes unserved repeatedly, or late in the period: the
            # owner may recall even partitions' shares
        self.outbox.append(self._to_owner(constraint.name, period, body))

    def ask_size(self, constraint: Constraint) -> int:
        """Units per ask: the rulebook's `quota`, else a quarter of a fair share per
        partition (small asks strand little; the low-water mark keeps them ahead)."""
        return constraint.chunk or max(1, constraint.limit // (4 * self.partitions))

    def _give_back(self, name: str, period: int, hold: Holding) -> None:
        unused = hold["g"] - hold["s"] - hold["r"]
        if unused <= 0 or hold["a"] > hold["k"]:
            return  # (an ask in flight: its grant is given back when it arrives)
        self._return(name, period, hold, unused, 0)

    def _recalled(self, constraint: Constraint, period: int, number: int,
                  everything: bool) -> None:
        """The owner recalls unspent quota for a partition whose demand it cannot serve.
        A first recall leaves a partition what is left of its share (or its low-water mark,
        when it spent since the last recall); a recall of `everything` leaves only the
        low-water mark, and nothing to a partition that did not spend since; a partition
        asking itself keeps all. The answer (a return, maybe of 0) is held back like any."""
        name = constraint.name
        if period < self.floor.get(name, -(2**62)):
            self._return(name, period, None, 0, number)
            return
        hold = self._hold(name, period)
        if number <= hold["rc"]:
            return  # answered already (the return is sent again until confirmed)
        unused = max(0, hold["g"] - hold["s"] - hold["r"])
        low = self.ask_size(constraint) // 2 if hold["s"] > hold["sr"] else 0
        if hold["a"] > hold["k"]:
            keep = unused
        elif everything:
            keep = min(unused, low)
        else:
            keep = min(unused, max(low, self.share(constraint, period) - hold["s"]))
        hold["rc"] = number
        hold["sr"] = hold["s"]
        self._return(name, period, hold, unused - keep, number)

    def _return(self, name: str, period: int, hold: Holding | None, amount: int,
                recall: int) -> None:
        self.seq += 1
        ident = f"{self.partition}.r{self.seq}"
        spent = 0
        if hold is not None:
            hold["r"] += amount
            spent = int(hold["s"])
        self.rets[ident] = [name, period, amount, recall, spent]
        self.dirty = True
        self.held_back.append(self._to_owner(name, period, self._ret_body(
            ident, amount, recall, spent)))

    @staticmethod
    def _ret_body(ident: str, amount: int, recall: int, spent: int) -> dict[str, str | int]:
        body: dict[str, str | int] = {"op": "ret", "id": ident, "n": amount, "s": spent}
        if recall:
            body["rc"] = recall
        return body

    def resend(self) -> None:
        """Send again the returns not yet confirmed (the driver calls it on loading a state
        and may call it any time: the owner applies each once)."""
        for ident, entry in sorted(self.rets.items()):
            name, period, amount = entry[:3]
            recall, spent = (entry[3], entry[4]) if len(entry) >= 5 else (0, 0)
            self.outbox.append(self._to_owner(str(name), int(period), self._ret_body(
                ident, int(amount), int(recall), int(spent))))

    def _to_owner(self, name: str, period: int, body: dict[str, str | int]) -> QuotaMessage:
        key = owner_key(name, period)
        return QuotaMessage(partition_for_key(key, self.partitions), key, dumps(
            {**body, "c": name, "p": period, "from": self.partition}))

    # -- records from other partitions -------------------------------------------------------

    def receive(self, body: bytes) -> str | None:
        """Apply an ask, grant, recall or return addressed to this partition; an error text
        when the record cannot be read (the driver dead-letters it)."""
        try:
            record = loads(body)
            op, name, period = str(record["op"]), str(record["c"]), int(record["p"])
            ident, sender = str(record["id"]), int(record["from"])
            amount = int(record.get("n", 0))
            number = int(record.get("k", 0))
            recall, spent = int(record.get("rc", 0)), int(record.get("s", 0))
        except (JSONDecodeError, KeyError, TypeError, ValueError):
            return "unreadable capacity record"
        if op == "retok":
            if self.rets.pop(ident, None) is not None:
                self.dirty = True
            return None
        constraint = self.constraints.get(name)
        if constraint is None:  # a constraint the rulebook no longer has: nothing to keep,
            if op == "recall":  # but an owner that still has it waits for an answer
                self._return(name, period, None, 0, number)
            return None
        if op == "grant":
            self._granted(constraint, period, number, amount, bool(record.get("more")))
        elif op == "recall":
            self._recalled(constraint, period, number, bool(record.get("all")))
        elif op == "ask":
            rounds = 0 if record.get("pre") else 2 if record.get("all") else 1
            self._asked(constraint, period, ident, amount, sender, rounds)
        elif op == "ret":
            self._returned(constraint, period, ident, amount, sender, recall, spent)
        else:
            return f"unknown capacity record {op!r}"
        return None

    def _granted(self, constraint: Constraint, period: int, number: int, amount: int,
                 more: bool = False) -> None:
        if period < self.floor.get(constraint.name, -(2**62)):
            return
        hold = self._hold(constraint.name, period)
        if number != hold["k"] + 1:
            return  # a duplicate (or out of turn: its ask will be answered again)
        hold["k"] = number
        hold["a"] = max(hold["a"], number)  # an ask a lost batch made: adopted
        hold["g"] += max(0, amount)
        # (short ahead of need, or with quota left at others: not dry)
        hold["dry"] = amount <= 0 and not hold["pre"] and not more
        self.dirty = True
        if constraint.period_ms and \
                (period + 1) * constraint.period_ms + self.grace_ms <= self.newest:
            self._give_back(constraint.name, period, hold)

    def _pool(self, constraint: Constraint, period: int) -> Pool | None:
        """The owned pool of a period (made at its first record); None when forgotten."""
        name = constraint.name
        if period < self.floor.get(name, -(2**62)):
            return None
        pool = self.pools.get((name, period))
        if pool is None:
            pool = self.pools[(name, period)] = {
                "left": constraint.limit - self.shared(constraint), "asks": {}, "rets": [],
                "d": {}, "sp": {}, "wait": [], "out": [], "rc": 0}
            self._forget(name, period)
        self.dirty = True
        return pool

    def _asked(self, constraint: Constraint, period: int, ident: str, amount: int,
               sender: int, rounds: int) -> None:
        pool = self._pool(constraint, period)
        if pool is None:  # forgotten long ago: nothing left to grant
            self._reply(constraint.name, period, sender, ident, 0)
            return
        granted = pool["asks"].get(ident)
        if granted is not None:  # a known ask is answered again, the same
            self._reply(constraint.name, period, sender, ident, granted)
            return
        if any(entry["id"] == ident for entry in pool["wait"]):
            return  # (waiting for a recall's answers)
        pool["wait"].append({"id": ident, "sender": sender, "n": max(0, amount), "done": 0,
                             "rounds": rounds})
        self._serve(constraint, period, pool)

    def _returned(self, constraint: Constraint, period: int, ident: str, amount: int,
                  sender: int, recall: int, spent: int) -> None:
        pool = self._pool(constraint, period)
        if pool is not None and ident not in pool["rets"]:
            pool["rets"].append(ident)
            pool["left"] += max(0, amount)
            who = str(sender)
            pool["d"][who] = pool["d"].get(who, 0) - max(0, amount)
            pool["sp"][who] = max(pool["sp"].get(who, 0), spent)
            if recall and recall == pool["rc"] and sender in pool["out"]:
                pool["out"].remove(sender)
            self._serve(constraint, period, pool)
        self.outbox.append(QuotaMessage(sender, owner_key(constraint.name, period), dumps(
            {"op": "retok", "c": constraint.name, "p": period, "id": ident,
             "from": self.partition})))

    def _serve(self, constraint: Constraint, period: int, pool: Pool) -> None:
        """Grant the waiting asks in order. One the pool cannot fill, made by a partition
        with demand it could not serve, recalls unspent quota first: what partitions were
        granted beyond their shares; then, if still short and the partition could not serve
        more than one demand of the period, everything but what partitions that are
        spending need. Each recall waits until all recalled answered; then the ask gets
        what there is. An ask ahead of need gets what there is at once."""
        wait = pool["wait"]
        while wait:
            head = wait[0]
            ident, sender, amount, done, rounds = (head["id"], head["sender"], head["n"],
                                                   head["done"], head["rounds"])
            if pool["left"] < amount:
                if pool["out"]:
                    return
                if done < rounds:
                    head["done"] = done + 1
                    if self._recall(constraint, period, pool, done == 1):
                        return
                    continue
            granted = min(amount, pool["left"])
            pool["left"] -= granted
            pool["asks"][ident] = granted
            who = str(sender)
            pool["d"][who] = pool["d"].get(who, 0) + granted
            wait.pop(0)
            # short, shares not recalled, some left with others: the next demand asks again
            more = granted < amount and 0 < rounds < 2 and \
                bool(self._holders(constraint, period, pool, True, sender))
            self._reply(constraint.name, period, sender, ident, granted, more)

    def _holders(self, constraint: Constraint, period: int, pool: Pool,
                 everything: bool, asker: int = -1) -> list[int]:
        """The partitions, but the asker and those waiting, that may hold unspent quota of
        the period beyond their share (`everything`: any): their share plus grants, less
        returns and what they said they spent (never less than what they hold)."""
        waiting = {entry["sender"] for entry in pool["wait"]} | {asker}
        lent, told = pool["d"], pool["sp"]
        out = []
        for part in range(self.partitions):
            if part in waiting:
                continue
            share = self.share(constraint, period, part)
            extra = lent.get(str(part), 0) - told.get(str(part), 0)
            if extra + share > 0 and (everything or extra > 0):
                out.append(part)
        return out

    def _recall(self, constraint: Constraint, period: int, pool: Pool,
                everything: bool) -> bool:
        """Ask the partitions that may hold unspent quota (`_holders`) to give it back;
        False when there are none."""
        out = self._holders(constraint, period, pool, everything)
        if not out:
            return False
        pool["rc"] += 1
        pool["out"] = out
        name = constraint.name
        body = {"op": "recall", "c": name, "p": period, "id": f"{self.partition}.c{pool['rc']}",
                "k": pool["rc"], "from": self.partition}
        if everything:
            body["all"] = 1
        for part in out:
            self.outbox.append(QuotaMessage(part, owner_key(name, period), dumps(body)))
        return True

    def _reply(self, name: str, period: int, sender: int, ident: str, amount: int,
               more: bool = False) -> None:
        number = int(ident.rsplit(".", 1)[1]) if "." in ident else 0
        body = {"op": "grant", "c": name, "p": period, "id": ident, "k": number, "n": amount,
                "from": self.partition}
        if more:
            body["more"] = 1
        self.outbox.append(QuotaMessage(sender, owner_key(name, period), dumps(body)))

    def _forget(self, name: str, period: int) -> None:
        """Keep `KEEP_PERIODS` periods of a constraint, owned and held."""
        floor = period - KEEP_PERIODS + 1
        if floor <= self.floor.get(name, -(2**62)):
            return
        self.floor[name] = floor
        for table in (self.pools, self.holds):
            for key in [k for k in table if k[0] == name and k[1] < floor]:
                del table[key]

    def owns(self, name: str, period: int) -> bool:
        """Whether this partition owns a constraint's period."""
        return partition_for_key(owner_key(name, period), self.partitions) == self.partition

    def pool_left(self, name: str, period: int) -> int | None:
        """What the owner has not granted of a period (None: not owned here, or forgotten);
        before its first record, the limit less the partitions' shares."""
        pool = self.pools.get((name, period))
        if pool is not None:
            return int(pool["left"])
        constraint = self.constraints.get(name)
        if constraint is None or period < self.floor.get(name, -(2**62)) \
                or not self.owns(name, period):
            return None
        return constraint.limit - self.shared(constraint)

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
        return dumps({
            "v": 2, "seq": self.seq, "newest": self.newest, "floor": self.floor,
            "rets": self.rets, "pend": self.pending,
            "holds": [[n, p, h] for (n, p), h in sorted(self.holds.items())],
            "pools": [[n, p, q] for (n, p), q in sorted(self.pools.items())]})

    @classmethod
    def from_bytes(cls, data: bytes, constraints: Mapping[str, Constraint], partition: int,
                   partitions: int, grace_ms: int = CLOSE_GRACE_MS) -> CapacityState:
        raw = loads(data)
        state = cls(constraints, partition, partitions, grace_ms)
        state.seq = int(raw["seq"])
        state.newest = int(raw["newest"])
        state.floor = {str(k): int(v) for k, v in raw.get("floor", {}).items()}
        # (the decoded JSON objects are the state's own; fields a v1 state lacks added)
        state.holds = {(str(n), int(p)): _holding(h) for n, p, h in raw.get("holds", [])}
        state.pools = {(str(n), int(p)): _pool(q) for n, p, q in raw.get("pools", [])}
        state.rets = {str(k): list(v) for k, v in raw.get("rets", {}).items()}
        state.pending = dict(raw.get("pend", {}))
        return state


def _holding(stored: Holding) -> Holding:
    """A stored holding, with the fields a v1 state did not write."""
    stored.setdefault("rc", 0)
    stored.setdefault("sr", 0)
    stored.setdefault("pre", False)
    stored.setdefault("w", 0)
    return stored


def _pool(stored: Pool) -> Pool:
    """A stored pool, with the fields a v1 state did not write."""
    stored.setdefault("d", {})
    stored.setdefault("sp", {})
    stored.setdefault("wait", [])
    stored.setdefault("out", [])
    stored.setdefault("rc", 0)
    return stored
