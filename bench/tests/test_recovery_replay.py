"""New bench helpers: the memory row's traffic (one event per recovered customer) and the
whole-process replay's floor (no timing asserted anywhere)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.recovery import _customers, touch_log
from bench.replay_process import FLOOR, run_process
from schemas.event import decode_event
from service.tools.simulator import customer_key
from service.tools.workload import event_log


def test_touch_log_addresses_each_customer_once_with_valid_events() -> None:
    """Every recovered customer (the workload's own, then synthetic ones) gets exactly one
    event that the worker accepts, keyed to that customer's profile, with a fresh event id
    (no alias from an anonymous id)."""
    log = event_log(3, 2_000, 300, datetime(2026, 3, 2, tzinfo=UTC))
    keys = [customer_key(orjson.loads(raw)) for raw in log]
    customers = _customers(keys, 500)
    own = list(dict.fromkeys(key for key in keys if key is not None))
    assert len(own) < 500 and len(set(customers)) == 500
    assert customers[:len(own)] == own
    assert customers[len(own)] == b"customer_id:r-0000000"
    events, event_keys = touch_log(log, customers)
    assert event_keys == customers
    decoded = [decode_event(raw) for raw in events]
    assert [event.key().encode() for event in decoded] == customers
    assert len({event.event_id for event in decoded}) == 500
    assert all(len(event.identity) == 1 for event in decoded)


def test_floor_process_writes_one_line_per_event(tmp_path: Path) -> None:
    """The floor the whole-process replay is compared with does its work: it exits 0 and
    writes one JSON line per input event, carrying the event's id."""
    log = event_log(3, 200, 50, datetime(2026, 3, 2, tzinfo=UTC))
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(log) + b"\n")
    wall, cpu, code = run_process([sys.executable, "-c", FLOOR, str(source),
                                   str(tmp_path / "out.jsonl")], tmp_path, dict(os.environ))
    assert code == 0 and wall > 0 and cpu >= 0
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["event_id"] for line in lines] == \
        [orjson.loads(raw)["event_id"] for raw in log]


def test_replay_process_runs_a_baseline_tree_in_turn_from_its_own_sources(
        tmp_path: Path) -> None:
    """`measure_replay_process(baseline=DIR)` runs `touchflow replay` from DIR as well as
    from the measured tree, each run in turn, and reports both against the floor: the
    baseline's processes import DIR's code (a tree whose replay fails is reported)."""
    from bench.paths import ROOT
    from bench.replay_process import measure_replay_process

    log = event_log(3, 300, 60, datetime(2026, 3, 2, tzinfo=UTC))
    rules = ROOT / "examples" / "default" / "rulebook.yaml"
    work = tmp_path / "work"
    work.mkdir()
    result = measure_replay_process(log, rules, ROOT, work, runs=1, baseline=ROOT)
    assert result["ok"], result
    assert len(result["replay baseline"]["wall_s"]) == 1
    assert set(result) >= {"replay_vs_baseline", "baseline_vs_floor", "replay_vs_floor",
                           "replay_vs_one_process"}
    assert len(result["replay one process"]["wall_s"]) == 1
    broken = tmp_path / "broken" / "service"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "__main__.py").write_text("raise SystemExit(3)\n")
    failed = measure_replay_process(log, rules, ROOT, work, runs=1, baseline=broken.parent)
    assert failed == {"ok": False, "note": "replay baseline exited with 3"}
