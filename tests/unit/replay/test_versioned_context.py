"""Replay reads reference data as of each event's time: a log spanning a stock-out and a
restock replays as it ran (service/replay/reader.load_context + runner + command)."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from service.cli import main
from service.domain.rules import parse_rulebook
from service.replay.reader import load_context
from service.replay.runner import replay_file
from tests.events import log_line

RULEBOOK = """\
version: "stock-1"
actions:
  promo:
    channel: web
    consent: exempt
    when:
      - event: {type: product_viewed}
    suppress_unless:
      - {context: "stock:{event.properties.sku}", gt: 0}
"""

# sku-1: 3 units from 09:00, sold out from 10:00, restocked (8) from 12:00 (+09:00)
CONTEXT = (
    '{"key": "stock:sku-1", "value": 0, "valid_from": "2026-03-02T10:00:00+09:00"}\n'
    '{"key": "stock:sku-1", "value": 3, "valid_from": "2026-03-02T09:00:00+09:00"}\n'
    '{"key": "stock:sku-1", "value": 8, "valid_from": "2026-03-02T03:00:00Z"}\n'
)

# (event id, minutes after 09:00): in log order, the last one arriving late
VIEWS = [("v-0930", 30), ("v-1030", 90), ("v-1159", 179), ("v-1200", 180), ("v-1230", 210),
         ("v-0945", 45)]
EXPECTED = {"v-0930": "sent", "v-1030": "suppressed", "v-1159": "suppressed",
            "v-1200": "sent", "v-1230": "sent", "v-0945": "sent"}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The rulebook, the log of views (one customer each) and the three-version context."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULEBOOK)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(log_line(eid, f"c-{eid}", "product_viewed", minute=minute,
                                     sku="sku-1") for eid, minute in VIEWS) + b"\n")
    context = tmp_path / "context.jsonl"
    context.write_text(CONTEXT)
    return rules, log, context


def _outcomes(audit: bytes) -> dict[str, str]:
    records = [orjson.loads(line) for line in audit.splitlines()]
    return {r["trigger_event_id"]: r["outcome"] for r in records if r.get("action") == "promo"}


def test_stock_out_and_restock_decide_by_event_time(files: tuple[Path, Path, Path]) -> None:
    """Each view reads the stock in force at its own time: sent before the stock-out,
    suppressed during it (11:59 included), sent from the restock on (12:00 included); a view
    logged late reads the stock of its time, not the newest."""
    rules, log, context = files
    audit, out = io.BytesIO(), io.BytesIO()
    replay_file(log, parse_rulebook(rules.read_text(), str(rules)),
                context=load_context(context), output=out, audit=audit)
    assert _outcomes(audit.getvalue()) == EXPECTED
    sent = [orjson.loads(line)["trigger_event_id"] for line in out.getvalue().splitlines()]
    assert sent == ["v-0930", "v-1200", "v-1230", "v-0945"]


def test_the_command_reads_versioned_context_files(
        files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow replay --context FILE` gives the same decisions as the library call."""
    rules, log, context = files
    code = main(["replay", "--rules", str(rules), "--input", str(log), "--context",
                 str(context), "--no-progress"])
    sent = [orjson.loads(line)["trigger_event_id"]
            for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and sent == ["v-0930", "v-1200", "v-1230", "v-0945"]


def test_one_source_of_context_only(files: tuple[Path, Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """--context and --context-from-topic together are refused in one sentence, exit 2."""
    rules, log, context = files
    code = main(["replay", "--rules", str(rules), "--input", str(log), "--context",
                 str(context), "--context-from-topic", "--no-progress"])
    assert code == 2
    assert "give one source of reference data" in capsys.readouterr().err
