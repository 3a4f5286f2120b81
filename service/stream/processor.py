"""The batch processor: raw Kafka messages in, actions, audit records and state out.

It is the whole streaming shell's logic, free of Faust so that the agents, the component tests
and the benchmarks drive the same code. For one batch it:

1. decodes each message once (orjson) and validates it; a bad one becomes a dead-letter record;
2. routes each event to the partition that owns its profile key: processed in place when the
   message already sits in that partition, otherwise forwarded to the repartition topic;
3. runs the pure `decide()` for local events, in order, reading each profile once per batch;
4. sends actions, per-channel copies, audit records, dead letters and forwards;
5. only once they are acknowledged sends one changelog record per touched profile (header:
   the source offset), so a changelog record on the broker implies its actions are there too;
6. once those are acknowledged, writes the profiles and the changelog checkpoint to the local
   store in one atomic batch.

The caller (either runtime: the Faust one drives the same loop) acknowledges the source
offsets after step 6: at-least-once delivery with idempotent effects, because a
replayed event is recognised by its `event_id` in the recovered profile. The lean runtime
overlaps steps 5-6 of a batch with steps 1-4 of the next ("the batch", below, says why that
is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from schemas.codec import dumps
from schemas.event import Event, EventError, decode_event
from schemas.vocabulary import CORE_EVENT_TYPES
from service.domain.capacity import CapacityState, QuotaMessage, with_quota
from service.domain.context_table import ContextTable
from service.domain.erasure import Tombstones, key_digest
from service.domain.learning import LearningState
from service.domain.partitioning import partition_for_key
from service.domain.profile import Profile
from service.domain.rules import Rulebook
from service.domain.step import Control, event_context, step_control, step_event
from service.ops.settings import Settings
from service.stream.batch import BatchStats, Message, PendingBatch, Record
from service.stream.batch_metrics import BatchMetrics
from service.stream.deadletter import dead_letter, pii_salt
from service.stream.fencing import GENERATION_HEADER, stamp
from service.stream.identity_control import CONTROL_HEADER, control_kind
from service.stream.profile_cache import ENTRY_OVERHEAD, HEAP_PER_STORED_BYTE, ProfileCache
from service.stream.recovery import RecoveryResult, recover_partitions
from service.stream.sink import Shipment, Sink
from service.stream.store import (
    CAPACITY_KEY,
    LEARNING_KEY,
    TOMBSTONE_PREFIX,
    PartitionStore,
    open_store,
    tombstone_key,
)
from service.stream.topics import TopicNames
from service.stream.tracing import trace_headers

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics

__all__ = ["BatchStats", "Message", "PendingBatch", "Processor", "Record"]

log = logging.getLogger(__name__)
_PARTITION_MEMO_LIMIT = 200_000  # key -> partition answers kept; a miss costs one murmur2


async def _acknowledged(acks: Shipment, timeout_s: float) -> None:
    """Wait for a shipment's acknowledgement; a timeout (`TOUCHFLOW_ACK_TIMEOUT_S`) fails
    the step without cancelling the shipment (its future is shared, and aiokafka's batches
    under it)."""
    await asyncio.wait_for(asyncio.shield(acks), timeout_s)


class Processor:
    """Owns the per-partition stores and turns batches of messages into output records."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        rulebook: Rulebook,
        sink: Sink,
        *,
        context: ContextTable | Mapping[str, Any] | None = None,
        metrics: Metrics | None = None,
        readiness: Readiness | None = None,
        in_place: bool = True,
        recover: Callable[[Mapping[int, PartitionStore]], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.time,
        fence: Callable[[], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self._salt = pii_salt(settings)  # of the digests in dead letters
        # Called before a batch's changelog records are sent: raises if this worker may have
        # lost its partitions, else names the group generation to stamp on them (None: no
        # stamp). The lean runtime sets it (service/stream/fencing.py); Faust's passes none.
        self.fence = fence
        self.topics = topics
        self.rulebook = rulebook
        self.sink = sink
        # reference data versioned in event time (the context reader's table, kept current)
        self.context = context if isinstance(context, ContextTable) else \
            ContextTable.of(context or {})
        self.metrics = metrics
        self.readiness = readiness
        self.in_place = in_place
        self._recover = recover or self._recover_from_changelog
        self._clock = clock
        self._stores: dict[int, PartitionStore] = {}
        # decoded profiles of every partition held, one byte budget for the process
        self._cache = ProfileCache(settings.profile_cache_bytes)
        self._unwritten: deque[PendingBatch] = deque()  # begun, not complete, in order
        self._recovered: set[int] = set()
        self._partition_of: dict[bytes, int] = {}
        self._lock = asyncio.Lock()
        self._batch_metrics = BatchMetrics(metrics, rulebook.event_types | CORE_EVENT_TYPES) \
            if metrics is not None else None
        self._signal_specs = list(rulebook.signals.values()) if topics.signal_feed else []
        # Learned propensities: one tally per partition, in the partition's store and
        # changelog like a profile (service/domain/learning.py)
        learning = rulebook.policy.learning
        self._refresh_ms = learning.refresh if learning is not None else None
        self.learning: dict[int, LearningState] = {}
        # Erasure tombstones, per partition: in memory, and in the store and changelog
        self.tombstones: dict[int, Tombstones] = {}
        self._tombstone_horizon = rulebook.max_lateness + settings.tombstone_margin_s * 1000
        self._context_late = (self.context.late, self.context.late_signals)
        # Capacity across customers: each partition's owned pools and held quotas, in its
        # store and changelog like the learned tallies (service/domain/capacity.py)
        self.capacity: dict[int, CapacityState] = {}
        # quota returns of batches begun, sent once their batch is in the store (by batch)
        self._held_back: dict[int, list[QuotaMessage]] = {}
        # Actions that spend capacity leave only once the state that spent it is durable:
        # (partition, action id) of batches begun, sent once their batch is in the store
        self._deferred: dict[int, list[tuple[int, str]]] = {}
        self._spends = rulebook.spends_capacity
        # states loaded with records to re-send, and the actions they held, by partition
        self._reloaded: dict[int, list[str]] = {}
        self._undelivered: BaseException | None = None  # a deferred action's send failed

    # -- partitions -------------------------------------------------------------------------

    def partition_for(self, key: bytes) -> int:
        """Kafka's default partitioner (murmur2), as every standard producer uses it."""
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) > _PARTITION_MEMO_LIMIT:
                self._partition_of.clear()
            partition = partition_for_key(key, self.settings.partitions)
            self._partition_of[key] = partition
        return partition

    async def assign(self, partitions: set[int]) -> None:
        """Recover the stores of newly assigned partitions (before their events are applied)
        and send again what their stored capacity states had not yet seen acknowledged."""
        async with self._lock:
            await self._recover_missing(set(partitions))
            sent = await self._send_reloaded()
            if sent:
                self._track_deferred(await self.sink.ship(), sent)

    async def revoke(self, partitions: set[int]) -> None:
        """Forget revoked partitions: close their stores, drop their caches. The caller
        completes (or abandons) the batches it began first; any left are abandoned here."""
        async with self._lock:
            if self._unwritten:
                log.warning("partitions revoked with batches not complete; abandoned",
                            extra={"batches": len(self._unwritten)})
                self.abandon()
            for partition in partitions:
                self._recovered.discard(partition)
                self._cache.drop(partition)
                self.learning.pop(partition, None)
                self.capacity.pop(partition, None)
                self._reloaded.pop(partition, None)
                self.tombstones.pop(partition, None)
                store = self._stores.pop(partition, None)
                if store is not None:
                    store.close()

    async def close(self) -> None:
        """Close every store (worker shutdown)."""
        await self.revoke(set(self._stores))

    async def _recover_from_changelog(self, stores: Mapping[int, PartitionStore]
                                      ) -> list[RecoveryResult]:
        def progress(partition: int, remaining: int) -> None:
            if self.metrics is not None:
                self.metrics.recovery_remaining.labels(str(partition)).set(remaining)

        results = await recover_partitions(
            self.settings, self.topics.changelog, stores, on_progress=progress
        )
        if self.metrics is not None:
            for result in results:
                self.metrics.recovery_seconds.observe(result.seconds)
        return results

    async def _recover_missing(self, partitions: set[int]) -> None:
        missing = sorted(partitions - self._recovered)
        if not missing:
            return
        stores: dict[int, PartitionStore] = {}
        for partition in missing:
            store = self._stores.get(partition)
            if store is None:
                store = open_store(
                    self.settings.store, self.settings.data_dir, self.settings.app_id, partition
                )
                self._stores[partition] = store
            stores[partition] = store
            if self.readiness is not None:
                self.readiness.mark_recovering(partition)
        await self._recover(stores)
        for partition, store in stores.items():
            self._recovered.add(partition)
            self._cache.reset(partition)
            self._load_learning(partition)
            self._load_capacity(partition)
            self._load_tombstones(partition)
            if self.readiness is not None:
                self.readiness.mark_recovered(partition)
            if self.metrics is not None:
                self.metrics.profiles.labels(str(partition)).set(store.count())

    async def _ensure_recovered(self, partition: int) -> PartitionStore:
        if partition not in self._recovered:
            await self._recover_missing({partition})
        return self._stores[partition]

    @property
    def cache(self) -> ProfileCache:
        """The decoded profiles held between batches (tests, diagnostics)."""
        return self._cache

    def store(self, partition: int) -> PartitionStore | None:
        """The store of a partition this worker holds (tests, diagnostics)."""
        return self._stores.get(partition)

    # -- the batch --------------------------------------------------------------------------
    #
    # A batch goes through three steps: `begin` (decode, decide, send the actions and every
    # other output, encode the changed profiles), `send_changelog` (once the actions are
    # acknowledged) and `complete` (once the changelog records are acknowledged: the store
    # write and the checkpoint). `process` runs the three in a row. The lean runtime overlaps
    # them: batch n+1 begins while batch n's records are on their way to the broker.
    #
    # Why that is safe: `begin` leaves the batch's profiles in the cache (a removed profile as
    # None), so the next batch decides on them, and encodes them before it returns, so the
    # next batch's in-place updates cannot leak into this batch's changelog records. The
    # store lags the cache by the batches not yet complete; the cache never forgets a key one
    # of them changed. Steps of successive batches run in batch order, so a partition's
    # changelog records and store checkpoints still follow its events. If any step fails,
    # the caller calls `abandon()` (the cache falls back to the store, which holds exactly the
    # complete batches) and processes every incomplete batch again from its messages; their
    # events are not yet in the store, so nothing is applied twice.

    async def process(self, messages: Sequence[Record]) -> BatchStats:
        """Process one batch; when it returns, every effect is durable on the broker. When it
        raises, the batch is abandoned (see `abandon`): call it again with the same messages."""
        async with self._lock:
            try:
                batch = await self._begin(messages)
                await self._send_changelog(batch)
                return await self._complete(batch)
            except BaseException:
                self.abandon()
                raise

    async def begin(self, messages: Sequence[Record]) -> PendingBatch:
        """Decide a batch and ship its output; `send_changelog` and `complete` follow, in
        batch order."""
        async with self._lock:
            return await self._begin(messages)

    async def send_changelog(self, batch: PendingBatch) -> None:
        """Once the batch's output is acknowledged, ship its changelog records."""
        async with self._lock:
            await self._send_changelog(batch)

    async def complete(self, batch: PendingBatch) -> BatchStats:
        """Once the changelog records are acknowledged, write the store and the checkpoint;
        the batch's source offsets may then be committed."""
        async with self._lock:
            return await self._complete(batch)

    def abandon(self) -> None:
        """Forget every batch begun and not completed (a step failed): the caches go, so the
        next batches read the store, which holds exactly the completed ones, and so do the
        learned tallies; records not yet handed to the producer are dropped (processing the
        batches again sends them again)."""
        self._cache.clear()
        self._unwritten.clear()
        self._held_back.clear()
        self._deferred.clear()
        self._undelivered = None  # (the reloaded states send their actions again)
        for partition in list(self.learning):
            self._load_learning(partition)
        for partition in list(self.tombstones):
            self._load_tombstones(partition)
        for partition in list(self.capacity):
            self._load_capacity(partition)
        self.sink.discard()

    def _load_learning(self, partition: int) -> None:
        """The partition's learned tallies as the newest batch encoded them, else as stored."""
        if self._refresh_ms is None:
            return
        raw = self._last_written_raw(partition, LEARNING_KEY)
        self.learning[partition] = LearningState.from_bytes(raw, self._refresh_ms) \
            if raw is not None else LearningState(self._refresh_ms)

    def _load_capacity(self, partition: int) -> None:
        """The partition's quotas as the newest batch encoded them, else as stored."""
        constraints = self.rulebook.capacity
        if not constraints:
            return
        raw = self._last_written_raw(partition, CAPACITY_KEY)
        partitions = self.settings.partitions
        before = self.capacity.get(partition)
        state = self.capacity[partition] = CapacityState.from_bytes(
            raw, constraints, partition, partitions) if raw is not None else \
            CapacityState(constraints, partition, partitions)
        state.resend()  # returns not confirmed yet: the owner applies each once
        if before is not None:  # (abandoned batches: what was acknowledged since is known)
            state.delivered([ident for ident in state.pending if ident not in before.pending])
        if state.outbox or state.pending:  # (pending: durable, not seen acknowledged)
            self._reloaded[partition] = list(state.pending)

    async def _send_reloaded(self) -> dict[int, list[str]]:
        """Send what loaded capacity states hold to send again: unconfirmed returns, and the
        actions that spent quota, durable but not seen acknowledged (the same action ids:
        consumers drop repeats). Returns the action ids sent, by partition."""
        sent: dict[int, list[str]] = {}
        for partition, idents in sorted(self._reloaded.items()):
            state = self.capacity.get(partition)
            if state is None:
                continue
            await self._send_quota(state)
            sent[partition] = await self._send_actions(state, idents)  # (not this batch's)
        self._reloaded.clear()
        return sent

    async def _send_quota(self, state: CapacityState) -> None:
        """The quota records a capacity state has to send, to the partitions they name."""
        for record in state.outbox:
            await self.sink.send(self.topics.repartition, record.key, record.body,
                                 partition=record.partition,
                                 headers=[(CONTROL_HEADER, b"capacity")])
        state.outbox.clear()

    async def _send_actions(self, state: CapacityState, idents: Sequence[str]) -> list[str]:
        """Send actions a capacity state keeps until delivered (`CapacityState.defer`)."""
        sent = []
        channel_topics = self.settings.channel_topics
        for ident in idents:
            payload = state.pending.get(ident)
            if payload is None:
                continue
            action, headers = payload
            encoded = dumps(action)
            customer = str(action["customer_id"]).encode()
            trace = [(str(k), str(v).encode("latin-1")) for k, v in headers] \
                if headers else None
            await self.sink.send(self.topics.actions, customer, encoded, headers=trace)
            if channel_topics:
                await self.sink.send(self.topics.channel_actions(action["channel"]), customer,
                                     encoded, headers=trace)
            sent.append(ident)
        return sent

    def _track_deferred(self, acks: asyncio.Future[Any], sent: Mapping[int, list[str]]
                        ) -> None:
        """Once the broker acknowledged deferred actions, their states stop re-sending them
        (the next batch stores that); a failed send fails the next batch, whose recovery
        reloads the states and sends them again."""
        if not any(sent.values()):
            return

        def settled(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return  # (abandoned: the reloaded states send them again)
            error = future.exception()
            if error is not None:
                self._undelivered = error
                return
            for partition, idents in sent.items():
                state = self.capacity.get(partition)
                if state is not None:
                    state.delivered(idents)

        acks.add_done_callback(settled)

    def _load_tombstones(self, partition: int) -> None:
        """The partition's erasure tombstones as stored (called with no batch pending)."""
        tombstones = self.tombstones[partition] = Tombstones()
        store = self._stores.get(partition)
        if store is None:
            return
        start = len(TOMBSTONE_PREFIX)
        for key, value in store.scan(TOMBSTONE_PREFIX):
            tombstones.load(key[start:].decode("ascii"), int(value))

    def _route(self, messages: Sequence[Record]
               ) -> tuple[list[tuple[int, Record, Event | None, bytes]],
                          list[tuple[Record, str, str]], list[tuple[bytes, Record, int]]]:
        """Decode each message once: (partition, message, event, key) to apply here (event
        None: an identity control record), the bad ones, and the ones to forward to the
        partition that owns their profile."""
        ordered: list[tuple[int, Record, Event | None, bytes]] = []
        bad: list[tuple[Record, str, str]] = []
        forwards: list[tuple[bytes, Record, int]] = []
        repartition = self.topics.repartition
        in_place = self.in_place
        for message in messages:
            if message.topic == repartition and message.headers and message.key is not None \
                    and control_kind(message) is not None:
                ordered.append((message.partition, message, None, message.key))
                continue
            try:
                event = decode_event(message.value)
            except EventError as error:
                bad.append((message, error.reason, error.message))
                continue
            if message.topic == repartition:
                # Forwarded: the Kafka key is the profile key (a merged alias forwards to the
                # profile it was merged into), and the message is on the owner's partition.
                key = message.key if message.key is not None else event.key().encode()
                ordered.append((message.partition, message, event, key))
                continue
            key = event.key().encode()
            owner = self.partition_for(key)
            if in_place and owner == message.partition:
                ordered.append((owner, message, event, key))
            else:
                forwards.append((key, message, owner))
        return ordered, bad, forwards

    async def _begin(self, messages: Sequence[Record]) -> PendingBatch:
        batch = PendingBatch(BatchStats(received=len(messages)), time.perf_counter())
        self._unwritten.append(batch)  # from here on, a failure abandons it with the others
        if self._undelivered is not None:  # recovery sends the deferred actions again
            failure, self._undelivered = self._undelivered, None
            raise failure
        stats = batch.stats
        sink = self.sink
        topics = self.topics
        event_counts = batch.event_counts
        actions, clocks = batch.actions, batch.clocks
        repartition = topics.repartition
        ordered, bad, forwards = self._route(messages)
        await self._send_unrouted(batch, bad, forwards)

        changed: dict[int, dict[bytes, Profile | None]] = {}
        # Each partition's store is recovered before its first use.
        for partition in sorted({item[0] for item in ordered}):
            await self._ensure_recovered(partition)
            changed.setdefault(partition, {})
        last_of: dict[int, Record] = {}
        stored = batch.stored  # keys that held a profile before this batch
        stores = self._stores
        cache_of = self._cache
        caches = {partition: cache_of.partition(partition) for partition in changed}
        rulebook, signals = self.rulebook, self._signal_specs
        learning, table = self.learning, self.context
        tombs = self.tombstones
        capacity, spends = self.capacity, self._spends
        newest_ts = self.context.decided_ms
        channel_topics = self.settings.channel_topics
        counted = batch.decisions if self.metrics is not None else None
        used: list[Mapping[str, Any] | None] = []  # the context each event was decided with
        failed: set[int] = set()  # positions in `ordered` whose step raised
        for index, (partition, message, maybe_event, key) in enumerate(ordered):
            cache = caches[partition]
            touched = changed[partition]
            last_of[partition] = message
            if key in touched:
                profile = touched[key]
            elif key in cache:
                profile = cache[key]  # None: removed by a batch not yet in the store
                if profile is not None:
                    stored.add(key)
            else:
                raw = stores[partition].get(key)
                if raw is not None:
                    profile = Profile.from_bytes(raw)
                    stored.add(key)
                else:
                    profile = None
            text = key.decode()
            erased_ms = tombs[partition].erased_ms(text) if profile is None else -1
            if maybe_event is None:
                used.append(None)
                stats.decisions += await self._apply_control(message, key, profile, touched,
                                                             tombs[partition], erased_ms,
                                                             counted)
                continue
            event = maybe_event
            ts = event.ts_ms
            if ts > newest_ts:
                newest_ts = ts
            tallies = learning.get(partition)
            context = event_context(table, tallies, ts)
            quota = capacity.get(partition)
            if quota is not None:
                quota.advance(ts)
                context = with_quota(context, quota)
            used.append(context)
            try:
                outcome = step_event(profile, text, event, context, rulebook, signals,
                                     erased_ms)
            except Exception as exc:  # a bug must not stop the partition: dead-letter it
                failed.add(index)
                await self._step_failed(batch, exc, index, ordered, used, failed, touched)
                continue
            effects = outcome.effects
            # W3C trace context, passed on (tracing.py); most events carry no header at all.
            trace = trace_headers(message.headers) if message.headers else None
            if effects is not None and effects.forward is not None:
                # An alias merged into another profile: that profile decides.
                target = effects.forward.encode()
                await sink.send(repartition, target, message.value,
                                partition=self.partition_for(target), headers=trace)
                stats.forwarded += 1
                continue
            if outcome.duplicate:  # (types the rulebook does not name: "other", batch_metrics.py)
                if outcome.late:  # not applied, but a loss: counted apart, and audited
                    stats.late += 1
                    event_counts[(event.channel, event.type, "late")] += 1
                    await self._audit(outcome.decisions, counted, stats, key)
                    continue
                stats.duplicates += 1
                event_counts[(event.channel, event.type, "duplicate")] += 1
                continue
            if effects is not None and effects.ignored:  # dated before its erasure: audited
                stats.ignored += 1
                event_counts[(event.channel, event.type, "ignored")] += 1
                await self._audit(outcome.decisions, counted, stats)  # keyed by digest
                for control in effects.controls:
                    await self._send_control(control)
                continue
            stats.processed += 1
            event_counts[(event.channel, event.type, "processed")] += 1
            if outcome.responses and tallies is not None:
                tallies.observe(outcome.responses, ts)
            touched[key] = outcome.profile
            if effects is not None:
                if effects.tombstone >= 0:
                    await self._erased(tombs[partition], key, effects.tombstone, effects.notice)
                for name, group in effects.feeds:
                    await sink.send(topics.signal_feed, f"{name}\x1f{group}".encode(), dumps(
                        {"signal": name, "group": group, "event_id": event.event_id,
                         "ts_ms": ts}))
                for control in effects.controls:
                    await self._send_control(control)
            for action in outcome.actions:
                if quota is not None and (action["action"], action["channel"]) in spends:
                    # it spent capacity: it leaves once this batch's state is durable
                    quota.defer(str(action["action_id"]), [action, [
                        [name, value.decode("latin-1")] for name, value in trace or ()]])
                    actions.append(action)
                    clocks.append((ts, message.timestamp))
                    continue
                encoded_action = dumps(action)
                customer = str(action["customer_id"]).encode()
                await sink.send(topics.actions, customer, encoded_action, headers=trace)
                if channel_topics:
                    await sink.send(topics.channel_actions(action["channel"]), customer,
                                    encoded_action, headers=trace)
                actions.append(action)
                clocks.append((ts, message.timestamp))
            if outcome.decisions:
                for record in outcome.decisions:
                    await sink.send(topics.decisions, key, dumps(record), headers=trace)
                stats.decisions += len(outcome.decisions)
                if counted is not None:
                    counted.extend(outcome.decisions)
        self.context.decided_ms = newest_ts
        resent = await self._send_reloaded() if self._reloaded else None
        for partition in changed:
            quota = capacity.get(partition)
            if quota is not None and quota.outbox:
                await self._send_quota(quota)
        if self.metrics is not None:
            self._observe_late(self.metrics, changed)
        for partition, last in last_of.items():
            batch.source_offsets[partition] = f"{last.topic}:{last.partition}:{last.offset}"
        self._encode(batch, changed, ordered)
        stats.actions = len(actions)
        stats.sent_actions = actions
        await self._ship(batch, resent)
        return batch

    async def _send_unrouted(self, batch: PendingBatch,
                             bad: Sequence[tuple[Record, str, str]],
                             forwards: Sequence[tuple[bytes, Record, int]]) -> None:
        """Dead-letter the messages that could not be read; forward those another partition
        owns (their key hashes elsewhere) to it through the repartition topic."""
        for message, reason, error in bad:
            await self._dead_letter(message, reason, error)
            batch.dead_reasons[reason] += 1
        batch.stats.deadlettered += len(bad)
        for key, message, owner in forwards:
            await self.sink.send(self.topics.repartition, key, message.value, partition=owner,
                                 headers=trace_headers(message.headers))
        batch.stats.forwarded += len(forwards)

    async def _step_failed(self, batch: PendingBatch, exc: Exception, index: int,
                           ordered: Sequence[tuple[int, Record, Event | None, bytes]],
                           used: Sequence[Mapping[str, Any] | None], failed: set[int],
                           touched: dict[bytes, Profile | None]) -> None:
        """The step raised on `ordered[index]`: events are atomic, so the customer's profile
        goes back to its state before the event, and the event is dead-lettered."""
        partition, message, _, key = ordered[index]
        if key in touched:
            touched[key] = self._rebuild(partition, key, ordered, used, failed)
        else:
            raw = self._last_written_raw(partition, key)
            self._cache.put(partition, key, Profile.from_bytes(raw) if raw is not None else None,
                            len(raw) if raw is not None else 0)
        log.error("decide() failed", extra={"error": type(exc).__name__,
                                            "offset": message.offset})
        await self._dead_letter(message, "decision_error",
                                f"decide() raised {type(exc).__name__}")
        batch.dead_reasons["decision_error"] += 1
        batch.stats.deadlettered += 1

    def _encode(self, batch: PendingBatch, changed: dict[int, dict[bytes, Profile | None]],
                ordered: Sequence[tuple[int, Record, Event | None, bytes]]) -> None:
        """Encode the batch's changed profiles and partition state into `batch.encoded` now,
        before the next batch updates these profile objects in place."""
        cache_of, learning, capacity = self._cache, self.learning, self.capacity
        for partition, touched in changed.items():
            values = batch.encoded[partition] = {}
            # ProfileCache.put inlined, a call per profile being measurable per event
            # (docs/decisions.md, "Small shapes on the per-event path")
            held, charges = cache_of.maps(partition)
            grown = 0
            for key, profile in touched.items():
                if profile is None:
                    values[key] = None
                    cost = ENTRY_OVERHEAD
                else:
                    value = values[key] = profile.to_bytes()
                    cost = ENTRY_OVERHEAD + HEAP_PER_STORED_BYTE * len(value)
                grown += cost - charges.pop(key, 0)
                charges[key] = cost  # last: the most recently written
                held[key] = profile
            cache_of.grew(partition, grown)
            tallies = learning.get(partition)
            if tallies is not None and tallies.dirty:
                values[LEARNING_KEY] = tallies.to_bytes()
                tallies.dirty = False
            quota = capacity.get(partition)
            if quota is not None and quota.dirty:
                values[CAPACITY_KEY] = quota.to_bytes()
                quota.dirty = False
                if quota.held_back:
                    self._held_back.setdefault(id(batch), []).extend(quota.held_back)
                    quota.held_back.clear()
                if quota.fresh:
                    self._deferred.setdefault(id(batch), []).extend(
                        (partition, ident) for ident in quota.fresh)
                    quota.fresh.clear()
            self._write_tombstones(partition, ordered, values)

    async def _ship(self, batch: PendingBatch, resent: Mapping[int, list[str]] | None) -> None:
        """Hand the batch's records to the sink, note when they are acknowledged, and bring
        the profile cache back under its bytes (the records are on their way)."""
        cache_of = self._cache
        batch.acks = await self.sink.ship()
        if resent:
            self._track_deferred(batch.acks, resent)
        clock = self._clock

        def acknowledged(future: Shipment) -> None:
            if not future.cancelled() and future.exception() is None:
                batch.acked_at = clock()

        batch.acks.add_done_callback(acknowledged)
        evicted = cache_of.trim(self._unwritten_keys)
        if self.metrics is not None:
            self.metrics.cache_bytes.set(cache_of.bytes)
            if evicted:
                self.metrics.cache_evictions.inc(evicted)

    def _rebuild(self, partition: int, key: bytes,
                 ordered: Sequence[tuple[int, Record, Event | None, bytes]],
                 used: Sequence[Mapping[str, Any] | None], failed: set[int]) -> Profile | None:
        """A profile as it was before the event now failing, when this batch changed it
        already: its last encoded state with the batch's earlier inputs for it applied again,
        each with the context it was decided with (outputs dropped: they were sent). No copy
        per event on the hot path; this runs only when decide() raises."""
        profile = self._last_written(partition, key)
        text = key.decode()
        for index, (where, message, event, other) in enumerate(ordered[:len(used) - 1]):
            if where != partition or other != key or index in failed:
                continue
            erased_ms = self.tombstones[partition].erased_ms(text) if profile is None else -1
            if event is None:
                result = step_control(profile, text, control_kind(message) or "",
                                      message.value, self.rulebook, erased_ms)
                if result.changed:
                    profile = result.profile
                continue
            context = used[index]
            assert context is not None
            outcome = step_event(profile, text, event, context, self.rulebook, (), erased_ms)
            effects = outcome.effects
            if not outcome.duplicate and (effects is None or (
                    effects.forward is None and not effects.ignored)):
                profile = outcome.profile
        return profile

    def _observe_late(self, metrics: Metrics, partitions: Iterable[int]) -> None:
        """Context records and responses that arrived after decisions they should have
        informed (the only ways a live decision can differ from replay's)."""
        late = (self.context.late, self.context.late_signals)
        if late != self._context_late:
            for kind, now, before in zip(("reference", "signal"), late, self._context_late,
                                         strict=True):
                if now > before:
                    metrics.context_late.labels(kind).inc(now - before)
            self._context_late = late
        for partition in partitions:
            tallies = self.learning.get(partition)
            if tallies is not None and tallies.late:
                metrics.learning_late.labels(str(partition)).set(tallies.late)
            quota = self.capacity.get(partition)
            if quota is not None:
                self._observe_capacity(metrics, partition, quota)

    @staticmethod
    def _observe_capacity(metrics: Metrics, partition: int, quota: CapacityState) -> None:
        """Spent, held and pooled quota of the partition's current periods (constraint
        names come from the rulebook: no customer data in labels)."""
        label = str(partition)
        for constraint, period, spent, held, pool in quota.report():
            name = constraint.name
            metrics.capacity_spent.labels(name, label).set(spent)
            metrics.capacity_held.labels(name, label).set(held)
            if pool is not None:
                metrics.capacity_pool.labels(name, label).set(pool)
            else:  # not (or no longer) owned here: no stale pool of an older period
                with contextlib.suppress(KeyError):
                    metrics.capacity_pool.remove(name, label)
            metrics.capacity_limit.labels(name).set(constraint.limit)
            metrics.capacity_period_start.labels(name).set(
                period * constraint.period_ms / 1000)
            metrics.capacity_period.labels(name).set(constraint.period_ms / 1000)

    async def _audit(self, records: Sequence[dict[str, Any]], counted: list[dict[str, Any]] | None,
                     stats: BatchStats, key: bytes | None = None) -> None:
        """The audit records of an input that changed nothing (late, or dated before its
        customer's erasure), under `key` (None: each record's customer, for an erased one
        its digest)."""
        for record in records:
            await self.sink.send(self.topics.decisions,
                                 key if key is not None else str(record["customer_id"]).encode(),
                                 dumps(record))
        stats.decisions += len(records)
        if counted is not None:
            counted.extend(records)

    async def _erased(self, tombstones: Tombstones, key: bytes, erased_ms: int,
                      notice: Mapping[str, Any] | None) -> None:
        """An erasure: keep the key's tombstone, tell `<prefix>.erasures`."""
        text = key.decode()
        tombstones.mark(text, erased_ms)
        if notice is not None and self.topics.erasures:
            await self.sink.send(self.topics.erasures, key_digest(text).encode(), dumps(notice))

    def _write_tombstones(self, partition: int,
                          ordered: Sequence[tuple[int, Record, Event | None, bytes]],
                          values: dict[bytes, bytes | None]) -> None:
        """Expire the partition's tombstones past their horizon (by the newest event time it
        applied) and add the changed ones to the batch's store and changelog values."""
        tombstones = self.tombstones.get(partition)
        if tombstones is None:
            return
        if len(tombstones):
            newest = max((event.ts_ms for where, _, event, _ in ordered
                          if where == partition and event is not None), default=-1)
            tombstones.advance(newest, self._tombstone_horizon)
        if tombstones.pending:
            if self.metrics is not None:
                self.metrics.tombstones.labels(str(partition)).set(len(tombstones))
            for digest, erased_ms in tombstones.pending.items():
                values[tombstone_key(digest)] = \
                    str(erased_ms).encode() if erased_ms is not None else None
            tombstones.pending.clear()

    async def _apply_control(self, message: Record, key: bytes, profile: Profile | None,
                             touched: dict[bytes, Profile | None], tombstones: Tombstones,
                             erased_ms: int, counted: list[dict[str, Any]] | None) -> int:
        """Apply an identity control record (service/domain/step.py); the audit records it
        wrote are returned as a count (and added to `counted`, for the metrics)."""
        kind = control_kind(message) or ""
        if kind == "capacity":  # a quota record: the partition's capacity state applies it
            quota = self.capacity.get(message.partition)
            error = quota.receive(message.value or b"") if quota is not None else None
            if error is not None:
                await self._dead_letter(message, "bad_control", error)
            return 0
        result = step_control(profile, key.decode(), kind, message.value, self.rulebook,
                              erased_ms)
        if result.tombstone >= 0:
            await self._erased(tombstones, key, result.tombstone, None)
        if result.dead is not None:
            await self._dead_letter(message, *result.dead)
        for control in result.controls:
            await self._send_control(control)
        audit_key = result.audit_key.encode() if result.audit_key else key
        for record in result.decisions:
            await self.sink.send(self.topics.decisions, audit_key, dumps(record))
        if counted is not None:
            counted.extend(result.decisions)
        if result.changed:
            touched[key] = result.profile
        return len(result.decisions)

    async def _send_control(self, control: Control) -> None:
        """An identity control record, to the partition that owns the key it addresses."""
        target = control.target.encode()
        await self.sink.send(self.topics.repartition, target, control.body,
                             partition=self.partition_for(target),
                             headers=[(CONTROL_HEADER, control.kind.encode())])

    def _unwritten_keys(self, partition: int) -> set[bytes]:
        """The keys of a partition changed by batches not yet in the store: the cache may not
        forget them (their state is nowhere else)."""
        return {key for batch in self._unwritten for key in batch.encoded.get(partition, ())}

    def _last_written(self, partition: int, key: bytes) -> Profile | None:
        """A profile as the newest batch that changed it encoded it, else as stored."""
        raw = self._last_written_raw(partition, key)
        return Profile.from_bytes(raw) if raw is not None else None

    def _last_written_raw(self, partition: int, key: bytes) -> bytes | None:
        for batch in reversed(self._unwritten):
            values = batch.encoded.get(partition)
            if values is not None and key in values:
                return values[key]
        store = self._stores.get(partition)
        return store.get(key) if store is not None else None

    async def _send_changelog(self, batch: PendingBatch) -> None:
        # Changelog after the actions are acknowledged: see the module docstring.
        # A partition's records get increasing offsets in send order, so its checkpoint is
        # the offset of its last record; the acknowledgement has raised if any was lost.
        assert batch.acks is not None
        await _acknowledged(batch.acks, self.settings.ack_timeout_s)
        generation = self.fence() if self.fence is not None else None
        sink = self.sink
        changelog = self.topics.changelog
        last_sent = batch.last_sent
        for partition, values in batch.encoded.items():
            header = [("src", batch.source_offsets.get(partition, "").encode())]
            if generation is not None:
                header.append((GENERATION_HEADER, stamp(generation, self._stores[partition])))
            fut = None
            for key, value in values.items():
                fut = await sink.send(changelog, key, value, partition=partition, headers=header)
            if fut is not None:
                last_sent[partition] = fut
        batch.acks = await sink.ship() if last_sent else None

    async def _complete(self, batch: PendingBatch) -> BatchStats:
        if batch.acks is not None:
            await _acknowledged(batch.acks, self.settings.ack_timeout_s)
        if not self._unwritten or self._unwritten[0] is not batch:
            raise RuntimeError("batches must complete in the order they began")
        checkpoints = {partition: await fut for partition, fut in batch.last_sent.items()}
        stats = batch.stats
        for partition, values in batch.encoded.items():
            if values:
                self._stores[partition].write(values, checkpoints.get(partition, -1),
                                              batch.stored)
                stats.profiles_written += len(values)
        self._unwritten.popleft()
        returns = self._held_back.pop(id(batch), None)
        deferred = self._deferred.pop(id(batch), None)
        if returns or deferred:  # (they leave once the state that made them is durable)
            for quota_record in returns or ():
                await self.sink.send(self.topics.repartition, quota_record.key,
                                     quota_record.body, partition=quota_record.partition,
                                     headers=[(CONTROL_HEADER, b"capacity")])
            sent: dict[int, list[str]] = {}
            for partition, ident in deferred or ():
                state = self.capacity.get(partition)
                if state is not None:
                    sent.setdefault(partition, []).extend(
                        await self._send_actions(state, [ident]))
            self._track_deferred(await self.sink.ship(), sent)
        stats.seconds = time.perf_counter() - batch.started
        if self._batch_metrics is not None:  # counted once complete: never twice
            self._batch_metrics.count_decisions(batch.decisions)
            self._batch_metrics.observe(stats, batch.event_counts, batch.dead_reasons,
                                        batch.actions, batch.clocks,
                                        batch.acked_at or self._clock())
        return stats

    async def _dead_letter(self, message: Record, reason: str, error: str) -> None:
        """Send a dead letter without personal data or identifiers (stream/deadletter.py)."""
        key, value = dead_letter(message, reason, error, self._salt, self.settings.app_id)
        await self.sink.send(self.topics.deadletter, key, value,
                             headers=trace_headers(message.headers))
        log.warning(
            "dead-lettered a message",
            extra={"reason": reason, "error": error, "topic": message.topic,
                   "partition": message.partition, "offset": message.offset},
        )
