"""Replay runs (service/replay/runner.py and the `touchflow replay` command)."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.event import decode_event
from service.cli import main
from service.domain.rules import load_rulebook
from service.replay.reader import BadRecord
from service.replay.runner import replay_events, replay_file
from tests.events import keyed, log_line
from tests.unit.replay.conftest import ROOT

TEST_RULES = ROOT / "tests" / "data" / "rulebook.yaml"


def _replay_bytes(log: Path, rules: Path) -> tuple[bytes, bytes]:
    out, audit = io.BytesIO(), io.BytesIO()
    replay_file(log, load_rulebook(rules), output=out, audit=audit)
    return out.getvalue(), audit.getvalue()


def test_two_runs_give_byte_identical_actions_and_audit(
    write_rulebook: Callable[..., Path], write_log: Callable[..., Path]
) -> None:
    """Determinism: the same log and rulebook give the same bytes, run after run (fresh
    rulebook objects, fresh profiles), and the run does produce actions and audit records."""
    rules, log = write_rulebook(), write_log()
    first = _replay_bytes(log, rules)
    second = _replay_bytes(log, rules)
    assert first == second
    assert first[0].count(b"\n") > 10 and first[1].count(b"\n") > 10


def test_cli_output_is_byte_identical_across_processes(
    write_rulebook: Callable[..., Path], write_log: Callable[..., Path], tmp_path: Path
) -> None:
    """`touchflow replay` in two separate processes (different hash seeds) writes identical
    action and audit files: nothing depends on wall time, hashing or dict order."""
    rules, log = write_rulebook(), write_log()
    outputs = []
    for run_no, seed in enumerate(("1", "2")):
        out, audit = tmp_path / f"a{run_no}.jsonl", tmp_path / f"d{run_no}.jsonl"
        subprocess.run(
            [sys.executable, "-m", "service", "replay", "--rules", str(rules), "--input",
             str(log), "--output", str(out), "--audit", str(audit)],
            cwd=ROOT, check=True, capture_output=True, timeout=60,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        )
        outputs.append((out.read_bytes(), audit.read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0]


def test_bad_lines_are_counted_with_line_numbers_and_replay_goes_on(
    write_rulebook: Callable[..., Path], tmp_path: Path
) -> None:
    """Bad lines (broken JSON, unknown channel, raw e-mail) are reported with line number and
    reason, counted, and the events after them are still decided."""
    lines = [log_line("e-1", "c-1"), b"{oops", log_line("e-2", "c-1"),
             log_line("e-3", "c-1", channel="fax"), log_line("e-4", "c-2"),
             log_line("e-5", "c-2", email="someone@example.com"), log_line("e-6", "c-2")]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    seen: list[BadRecord] = []
    out = io.BytesIO()
    result = replay_file(log, load_rulebook(write_rulebook()), output=out, on_bad=seen.append)
    assert result.bad_records == 3
    assert [(b.where, b.reason) for b in result.bad_examples] == [
        (f"{log}:2", "invalid_json"), (f"{log}:4", "unknown_channel"),
        (f"{log}:6", "personal_data")]
    assert seen == result.bad_examples
    assert result.stats.events == 4 and result.stats.processed == 4
    triggers = [orjson.loads(line)["trigger_event_id"] for line in out.getvalue().splitlines()]
    assert triggers == ["e-2", "e-6"]  # second page view of each customer reaches 20


def test_cli_reports_bad_lines_on_stderr_and_exits_zero(
    write_rulebook: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command names file:line and reason for each bad line, summarises the count, keeps
    stdout for actions only, and still succeeds."""
    log = tmp_path / "log.jsonl"
    log.write_bytes(log_line("e-1", "c-1") + b"\nnot json\n" + log_line("e-2", "c-1") + b"\n")
    errors = tmp_path / "errors.jsonl"
    code = main(["replay", "--rules", str(write_rulebook()), "--input", str(log),
                 "--errors", str(errors), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert f"{log}:2: invalid_json" in captured.err
    assert "1 bad records skipped" in captured.err
    assert [orjson.loads(x)["trigger_event_id"] for x in captured.out.splitlines()] == ["e-2"]
    assert orjson.loads(errors.read_bytes())["where"] == f"{log}:2"


def test_gzip_log_replays_like_the_plain_one(
    write_rulebook: Callable[..., Path], write_log: Callable[..., Path], tmp_path: Path
) -> None:
    """A gzip-compressed log gives exactly the output of the same log uncompressed."""
    rules, log = write_rulebook(), write_log()
    packed = tmp_path / "log.jsonl.gz"
    with open(log, "rb") as source, gzip.open(packed, "wb") as target:
        shutil.copyfileobj(source, target)
    assert _replay_bytes(packed, rules) == _replay_bytes(log, rules)


def test_duplicates_are_skipped_like_the_worker_does(
    write_rulebook: Callable[..., Path], tmp_path: Path
) -> None:
    """A redelivered event (same event_id) changes nothing and sends nothing again."""
    lines = [log_line("e-1", "c-1"), log_line("e-2", "c-1"), log_line("e-2", "c-1"),
             log_line("e-1", "c-1")]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(lines))
    out = io.BytesIO()
    result = replay_file(log, load_rulebook(write_rulebook()), output=out)
    assert (result.stats.processed, result.stats.duplicates) == (2, 2)
    assert out.getvalue().count(b"\n") == 1


def test_late_events_are_counted_apart_from_duplicates_and_audited(
    write_rulebook: Callable[..., Path], tmp_path: Path
) -> None:
    """An event older than max_lateness is counted as `late` (not as a duplicate) in the
    replay summary, and its `late` audit record is written with the others."""
    late = orjson.loads(log_line("e-0", "c-1"))
    late["occurred_at"] = "2026-02-01T09:00:00+09:00"
    lines = [log_line("e-1", "c-1"), log_line("e-1", "c-1"), orjson.dumps(late)]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(lines))
    audit = io.BytesIO()
    result = replay_file(log, load_rulebook(write_rulebook()), audit=audit)
    assert (result.stats.processed, result.stats.duplicates, result.stats.late) == (1, 1, 1)
    kinds = [orjson.loads(line)["kind"] for line in audit.getvalue().splitlines()]
    assert kinds.count("late") == 1
    assert result.stats.to_dict()["late"] == 1


def test_replay_events_library_api_yields_one_step_per_event(
    write_rulebook: Callable[..., Path],
) -> None:
    """`replay_events` takes decoded events and yields each one's Outcome, in order."""
    events = [decode_event(log_line(f"e-{i}", "c-9")) for i in range(3)]
    steps = list(replay_events(events, load_rulebook(write_rulebook()), {}))
    assert [s.event.event_id for s in steps] == ["e-0", "e-1", "e-2"]
    assert all(s.outcome is not None and s.error is None for s in steps)
    assert [len(s.outcome.actions) for s in steps if s.outcome] == [0, 1, 1]


def test_a_failed_decide_leaves_no_trace_in_replay_as_in_the_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """decide() failing half-way (after updating the profile) on one customer's event: replay
    runs the log again with that customer's profile copied before each event, so the failed
    event leaves no trace (the 10th ping is the 10th, not the 11th) and the output files hold
    the second run only."""
    import service.domain.step as step_module

    real = step_module.decide

    def flaky(profile: Any, event: Any, context: Any, rulebook: Any) -> Any:
        outcome = real(profile, event, context, rulebook)
        if event.event_id == "p-3":
            raise ValueError("a bug")
        return outcome

    monkeypatch.setattr(step_module, "decide", flaky)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(keyed(f"p-{n}", "ping", n, customer_id="c-1") + b"\n"
                             for n in range(12)))
    out = tmp_path / "actions.jsonl"
    with out.open("wb") as handle:
        result = replay_file(log, load_rulebook(TEST_RULES), output=handle)
    assert result.reruns == 1 and result.inexact == 0 and result.stats.errors == 1
    actions = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(a["action"], a["trigger_event_id"]) for a in actions] == [("milestone_10", "p-10")]


@pytest.mark.parametrize("example", sorted(
    path.parent.name for path in (ROOT / "examples").glob("*/events.jsonl")))
def test_a_replayed_example_leaves_no_reference_cycles(example: str) -> None:
    """Replay runs with the automatic garbage collector off (runner.quiet_gc): that is only
    sound while replaying events makes no cyclic garbage. Every example's log, with its
    rulebook and context (identity merges, erasures, consent, responses, signals, capacity),
    replayed between two collections leaves nothing for the second one to free."""
    import gc

    from service.replay.reader import load_context

    folder = ROOT / "examples" / example
    rulebook = load_rulebook(folder / "rulebook.yaml")
    context_file = folder / "context.jsonl"
    context = load_context(context_file) if context_file.exists() else None
    gc.collect()
    result = replay_file(folder / "events.jsonl", rulebook, context=context,
                         output=io.BytesIO(), audit=io.BytesIO(), operations=io.BytesIO())
    assert result.stats.events > 0 and not result.stats.errors
    assert gc.isenabled()  # (given back after the run)
    result.state = None
    assert gc.collect() == 0
