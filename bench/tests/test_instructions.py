"""bench/inprocess.py and bench/instructions.py: the in-process processor really runs the
worker's shell, and the instruction counts are read right and repeat exactly."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import instructions
from bench.inprocess import RULES, run_processor
from service.tools.simulator import customer_key
from service.tools.workload import event_log

_START = datetime(2026, 3, 2, tzinfo=UTC)


def _workload(n: int) -> tuple[list[bytes], list[bytes | None]]:
    import orjson

    log = event_log(7, n, 1_000, _START)
    return log, [customer_key(orjson.loads(raw)) for raw in log]


def test_parse_refs_reads_cachegrind_summary() -> None:
    """The total comes from the 'I refs' line, thousands separators and all; a report
    without one is an error, not a zero."""
    report = "==42== Cachegrind, a cache and branch-prediction profiler\n" \
             "==42== \n==42== I   refs:      1,632,594,353\n"
    assert instructions.parse_refs(report) == 1_632_594_353
    with pytest.raises(ValueError, match="I refs"):
        instructions.parse_refs("==42== ERROR SUMMARY: 0 errors")


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_in_process_processor_sends_what_replay_decides(store: str) -> None:
    """The in-process driver goes through the worker's processor: the actions it sends are
    exactly replay's for the same log, each also to its channel topic, and every changed
    profile leaves a changelog record."""
    from schemas.event import decode_event
    from service.domain import load_rulebook
    from service.replay.runner import Replayer

    log, keys = _workload(3_000)
    _seconds, sent = run_processor(log, keys, store=store, batch=100)
    replayer = Replayer(load_rulebook(RULES))
    replayed = sum(len(replayer.apply(decode_event(raw)).actions) for raw in log)
    actions = sent.get("inprocess.actions", 0)
    per_channel = sum(n for topic, n in sent.items() if topic.startswith("inprocess.actions."))
    assert actions > 0 and per_channel == actions
    assert actions == replayed
    assert sent["touchflow-inprocess.profiles-changelog"] >= len(replayer.profiles)


def test_skipped_with_a_reason_without_valgrind(monkeypatch: pytest.MonkeyPatch) -> None:
    """No valgrind: the row says how to get it instead of failing the benchmark."""
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    result = instructions.measure_instructions([b"{}"] * 10, [None] * 10)
    assert result["ok"] is False and "apt-get install valgrind" in result["note"]


@pytest.mark.parametrize("mode", instructions.MODES)
def test_every_child_mode_runs(mode: str, tmp_path: Path) -> None:
    """Each mode the valgrind run uses works natively over a small log."""
    workload = tmp_path / "w.pickle"
    instructions.write_workload(workload, *_workload(300))
    assert instructions.main(["--child", mode, "--input", str(workload),
                              "--events", "300"]) == 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_count_repeats_exactly(tmp_path: Path) -> None:
    """Two valgrind runs of the same mode over the same events count the same instructions
    to within a hundredth of a percent (the figure the benchmark publishes as reproducible),
    and more events count more."""
    workload = tmp_path / "w.pickle"
    instructions.write_workload(workload, *_workload(600))
    first = instructions.count_instructions("replay", workload, 600)
    second = instructions.count_instructions("replay", workload, 600)
    fewer = instructions.count_instructions("replay", workload, 100)
    assert abs(first - second) <= first * 1e-4
    assert fewer < first
