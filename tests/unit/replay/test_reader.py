"""Reading event logs and context files for replay (service/replay/reader.py, topic.parse_time)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from service.domain.context_table import BEGINNING
from service.replay.reader import BadRecord, LogFile, ReplayInputError, decode_lines, load_context
from service.replay.topic import parse_time
from tests.events import log_line


def test_plain_log_yields_numbered_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    """Line numbers count every physical line from 1, blank lines included, so a reported
    line number is the one an editor shows."""
    log = tmp_path / "log.jsonl"
    log.write_bytes(log_line("e-1", "c-1") + b"\n\n   \n" + log_line("e-2", "c-1") + b"\n")
    assert [n for n, _ in LogFile(log)] == [1, 4]


def test_gzip_is_detected_by_content_not_by_name(tmp_path: Path) -> None:
    """A gzip log is read transparently whatever its name, and progress counts on-disk bytes."""
    log = tmp_path / "log.jsonl"  # no .gz suffix on purpose
    log.write_bytes(gzip.compress(log_line("e-1", "c-1") + b"\n" + log_line("e-2", "c-1") + b"\n"))
    reader = LogFile(log)
    assert [orjson.loads(raw)["event_id"] for _, raw in reader] == ["e-1", "e-2"]
    assert reader.bytes_read == reader.total_bytes == log.stat().st_size


def test_bad_lines_are_reported_with_line_number_and_reason_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    """Invalid JSON and invalid events become BadRecords naming file:line and a reason code;
    the good events around them still come through, in order."""
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join([
        log_line("e-1", "c-1"), b"{not json", log_line("e-2", "c-1"),
        orjson.dumps({"event_id": "e-3", "channel": "fax"}), log_line("e-4", "c-1"),
    ]) + b"\n")
    bad: list[BadRecord] = []
    reader = LogFile(log)
    good = [event.event_id for event, _ in decode_lines(reader, bad.append, reader.label)]
    assert good == ["e-1", "e-2", "e-4"]
    assert [(b.where, b.reason) for b in bad] == [
        (f"{log}:2", "invalid_json"), (f"{log}:4", "unknown_channel")]
    assert "e-3" not in str(bad[1])  # the reason names the field, never echoes the input


def test_missing_log_is_one_readable_error(tmp_path: Path) -> None:
    """A log that does not exist fails up front with a sentence naming it."""
    with pytest.raises(ReplayInputError, match=r"cannot read the log .*nope\.jsonl"):
        LogFile(tmp_path / "nope.jsonl")


def test_truncated_gzip_is_reported_with_the_last_good_line(tmp_path: Path) -> None:
    """A cut-off gzip file raises ReplayInputError after yielding what could be read."""
    log = tmp_path / "log.jsonl.gz"
    whole = gzip.compress(b"".join(log_line(f"e-{i}", "c-1") + b"\n" for i in range(2000)))
    log.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ReplayInputError, match="cannot be read after line"):
        for _ in LogFile(log):
            pass


def test_context_file_uses_the_worker_semantics(tmp_path: Path) -> None:
    """Context lines apply in order: later values win, null deletes, malformed lines are bad;
    a line without valid_from holds from the beginning of time (a file has no timestamp)."""
    path = tmp_path / "context.jsonl"
    path.write_text('{"key": "stock:a", "value": 3}\n{"key": "stock:b", "value": 1}\n'
                    '{"key": "stock:a", "value": 5}\n{"key": "stock:b", "value": null}\n'
                    "[1, 2]\n")
    bad: list[BadRecord] = []
    table = load_context(path, bad.append)
    assert table.as_of(BEGINNING) == {"stock:a": 5}
    assert table.versions("stock:a") == [(BEGINNING, 5)]
    assert [b.where for b in bad] == [f"{path}:5"]


def test_context_file_lines_carry_valid_from(tmp_path: Path) -> None:
    """Versions of one key in a file apply from their valid_from (ISO or epoch ms), in any
    line order; a bad valid_from makes the line bad and changes nothing."""
    path = tmp_path / "context.jsonl"
    path.write_text(
        '{"key": "stock:a", "value": 0, "valid_from": "2026-03-02T11:00:00Z"}\n'
        '{"key": "stock:a", "value": 5, "valid_from": "2026-03-02T09:00:00+00:00"}\n'
        '{"key": "stock:a", "value": 7, "valid_from": 1772456400000}\n'
        '{"key": "stock:a", "value": 1, "valid_from": "noon"}\n')
    bad: list[BadRecord] = []
    table = load_context(path, bad.append)
    nine = parse_time("2026-03-02T09:00:00Z")
    assert table.versions("stock:a") == [(nine, 5), (nine + 2 * 3_600_000, 0),
                                         (1772456400000, 7)]
    assert [(b.where, b.reason) for b in bad] == [(f"{path}:4", "bad_context")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:30:00+09:00", datetime(2026, 3, 2, 0, 30, tzinfo=UTC)),
        ("2026-03-02T00:30:00Z", datetime(2026, 3, 2, 0, 30, tzinfo=UTC)),
        ("2026-03-02", datetime(2026, 3, 2, tzinfo=UTC)),
        ("1772411400000", datetime(2026, 3, 2, 0, 30, tzinfo=UTC)),
        ("-1d", datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
        ("-90m", datetime(2026, 3, 2, 10, 30, tzinfo=UTC)),
    ],
)
def test_since_until_accept_iso_dates_epoch_ms_and_relative_times(
    text: str, expected: datetime
) -> None:
    """--since/--until: ISO-8601 (UTC when no offset), a date, epoch ms, or -Nd/-Nh/-Nm."""
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert parse_time(text, now) == int(expected.timestamp() * 1000)


def test_unparseable_time_says_what_is_accepted() -> None:
    """A bad --since value gives a message listing the accepted forms."""
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("last tuesday")
