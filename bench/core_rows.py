"""The in-process rows of `python -m bench`: the pure core (`decide()` alone), the replay
engine (decode + decide + encode the actions), the memory a profile takes and the profile
codec's cost. No broker: these show how much of the worker's time the core is."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench.harness import Measurement
from bench.paths import RULES

__all__ = ["REPLAY_RUNS", "profile_codec", "pure_core", "replay", "replay_once"]


def pure_core(log: list[bytes]) -> Measurement:
    """decide() over the same events, in-process, via bench/bench_decide.py's run()."""
    try:
        from bench.bench_decide import run
        from schemas.event import decode_event
        from service.domain import load_rulebook

        out = run([decode_event(raw) for raw in log], load_rulebook(RULES), {})
        seconds = float(out["seconds"])
        return Measurement(events=int(out.get("events", len(log))), seconds=seconds,
                           cpu_seconds=seconds, ok=True, note="in-process, no Kafka")
    except Exception as exc:
        return Measurement(note=f"failed: {type(exc).__name__}: {exc}")


REPLAY_RUNS = 3


def replay_once(log: list[bytes]) -> tuple[float, Any]:
    """Seconds for one replay of `log` (decode, decide, encode each action), and the replayer."""
    from schemas.codec import dumps_line
    from schemas.event import decode_event
    from service.domain import load_rulebook
    from service.replay.runner import Replayer, quiet_gc

    replayer = Replayer(load_rulebook(RULES))
    out: list[bytes] = []
    with quiet_gc() as collector:  # (its one full collection before the run is not timed)
        started = time.perf_counter()
        for number, raw in enumerate(log):
            if not number & 0x3FF:
                collector.after_batch()
            try:
                outcome = replayer.apply(decode_event(raw))
            except Exception:  # bad events are skipped, as in replay
                continue
            if outcome.actions:  # as replay_stream writes them
                for action in outcome.actions:
                    out.append(dumps_line(action))
        seconds = time.perf_counter() - started
    return seconds, replayer


def replay(log: list[bytes]) -> tuple[Measurement, dict[str, float]]:
    """`touchflow replay`'s engine over the same events (decode + decide + encode, one core),
    the median of `REPLAY_RUNS` runs (one run moves by +/-5 % here), and the memory a profile
    takes: Python heap per profile in memory (tracemalloc), and the mean size of a profile as
    stored (RocksDB value and changelog record)."""
    from schemas.event import decode_event
    from service.domain import load_rulebook
    from service.replay.runner import Replayer

    runs = [replay_once(log) for _ in range(REPLAY_RUNS)]
    times = sorted(seconds for seconds, _ in runs)
    seconds = times[len(times) // 2]
    replayer = runs[-1][1]
    del runs
    profiles = list(replayer.profiles.values())
    stored = sum(len(p.to_bytes()) for p in profiles) / max(1, len(profiles))
    # Python-object memory per profile, traced on a fresh replay of the first 40k events
    import tracemalloc

    sample = Replayer(load_rulebook(RULES))
    tracemalloc.start()
    for raw in log[:40_000]:
        with contextlib.suppress(Exception):
            sample.apply(decode_event(raw))
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    memory = {"profiles": len(profiles),
              "heap_bytes_per_profile": round(traced / max(1, len(sample.profiles))),
              "stored_bytes_per_profile": round(stored), **profile_codec(profiles, log)}
    spread = ", ".join(f"{len(log) / t:,.0f}" for t in times)
    return (Measurement(events=len(log), seconds=seconds, cpu_seconds=seconds, ok=True,
                        note=f"in-process, no Kafka; median of {spread}/s"), memory)


def profile_codec(profiles: list[Any], log: list[bytes]) -> dict[str, float]:
    """Microseconds to encode and decode a profile (what the worker does per touched profile
    per batch, and per store read): mean over the bench's profiles (mostly one or two events
    each), and for a returning customer whose id ring is full (the same customer's profile
    after `remember_events` + 10 of the log's events re-keyed to it)."""
    import orjson

    from schemas.event import decode_event
    from service.domain import Profile, load_rulebook
    from service.replay.runner import Replayer

    def timed(items: list[Any], work: Any) -> float:
        started = time.perf_counter()
        for item in items:
            work(item)
        return (time.perf_counter() - started) / len(items) * 1e6

    sample = profiles[:20_000]
    stored = [p.to_bytes() for p in sample]
    rulebook = load_rulebook(RULES)
    regular = Replayer(rulebook)
    for number, raw in enumerate(log[:rulebook.remember_events + 10]):
        data = orjson.loads(raw)
        data["identity"] = {"customer_id": "c-regular"}
        data["event_id"] = f"regular-{number}"
        regular.apply(decode_event(orjson.dumps(data)))
    full = [regular.profiles[b"customer_id:c-regular"]] * 20_000
    full_stored = [p.to_bytes() for p in full]
    return {"encode_us": round(timed(sample, Profile.to_bytes), 2),
            "decode_us": round(timed(stored, Profile.from_bytes), 2),
            "full_ring_encode_us": round(timed(full, Profile.to_bytes), 2),
            "full_ring_decode_us": round(timed(full_stored, Profile.from_bytes), 2),
            "full_ring_stored_bytes": len(full_stored[0])}
