"""A log decoded in a second process (service/replay/decoder_process.py) against
`decode_lines` in one: the same events, bad records and errors, in the same order."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import Event, decode_event, event_fields, event_from_fields
from service.cli import main
from service.replay.decoder_process import _CHUNK as CHUNK
from service.replay.decoder_process import DecoderProcess, decoder_process_available
from service.replay.reader import BadRecord, LogFile, ReplayInputError, decode_lines
from tests.events import at_ms, log_line
from tests.unit.replay.conftest import ROOT

pytestmark = pytest.mark.skipif(not decoder_process_available(),
                                reason="needs os.fork and two CPUs")

_LINES = st.one_of(
    st.builds(lambda n, c, m, sku: log_line(f"e-{n}", f"c-{c}", minute=m, sku=sku),
              st.integers(0, 50), st.integers(0, 5), st.integers(0, 600),
              st.sampled_from(["tv", "phone", "ünïcode", "a\"quote", "x" * 70])),
    st.builds(lambda n, ms: orjson.dumps({
        "event_id": f"m-{n}", "occurred_at": at_ms(ms), "channel": "mobile", "type": "app_opened",
        "identity": {"anonymous_id": f"a-{n}"}, "properties": {"n": n, "f": n / 7, "ok": True,
                                                             "list": [1, None, {"k": "v"}]},
        "context": {"device": "ios"}}), st.integers(0, 10**6), st.integers(0, 2 * 10**12)),
    st.sampled_from([b"{oops", b"[]", b"42", b'{"event_id": ""}', b"   ", b"",
                     log_line("p-1", "c-1", email="someone@example.com"),
                     log_line("p-2", "c-2", note="call +1 415 555 0100"),
                     log_line("p-3", "c-3", channel="fax")]),
)


def _sequence(events: Any, bad: list[Any]) -> list[Any]:
    """Events and bad records in the order the reader met them."""
    for event, raw in events:
        bad.append((event, event.key(), raw))
    return bad


@settings(max_examples=30, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LINES, max_size=40), repeat=st.integers(1, 30))
def test_the_decoder_process_yields_what_decode_lines_yields(
        tmp_path: Path, lines: list[bytes], repeat: int) -> None:
    """Any mix of valid events, malformed JSON, personal data, blank lines and non-objects,
    over one frame or many: the forked decoder gives the same events (every field and the
    profile key) and the same bad records with their line numbers, interleaved in the same
    order, as `decode_lines` in this process (the raw line is not carried: b"")."""
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    path.write_bytes(b"\n".join(lines * repeat) + b"\n")
    here: list[Any] = []
    expected = _sequence(((event, b"") for event, _ in
                          decode_lines(LogFile(path), here.append, "log")), here)
    there: list[Any] = []
    with DecoderProcess(LogFile(path), there.append, "log") as decoder:
        got = _sequence(decoder, there)
    assert got == expected
    assert any(isinstance(item, BadRecord) for item in got) == any(
        isinstance(item, BadRecord) for item in expected)


def test_event_fields_round_trip() -> None:
    """`event_from_fields(event_fields(e))` equals `e`, profile key included."""
    event = decode_event(log_line("e-1", "c-1", sku="tv"))
    again = event_from_fields(event_fields(event))
    assert again == event and again.key() == event.key() == "customer_id:c-1"


def test_a_truncated_gzip_gives_the_events_before_it_then_the_same_error(
        tmp_path: Path) -> None:
    """A gzip log cut short: the decoder hands out the events read before the break, then
    raises the one-sentence `ReplayInputError` the one-process path raises."""
    packed = gzip.compress(b"".join(log_line(f"e-{n}", f"c-{n % 7}", minute=n) + b"\n"
                                    for n in range(40 * CHUNK)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    expected: list[Event] = []
    with pytest.raises(ReplayInputError) as one:
        for event, _ in decode_lines(LogFile(path), print, "cut"):
            expected.append(event)
    got: list[Event] = []
    with pytest.raises(ReplayInputError) as two:
        for event, _ in DecoderProcess(LogFile(path), print, "cut"):
            got.append(event)
    assert str(two.value) == str(one.value) and "cannot be read after line" in str(one.value)
    assert got == expected and got


def test_a_decoder_that_dies_is_an_error_not_a_short_log(tmp_path: Path) -> None:
    """The decoding process killed half-way: the reader raises a `ReplayInputError` saying
    so (with the exit status) instead of ending as if the log were shorter."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(log_line(f"e-{n}", "c-1", minute=n) + b"\n"
                              for n in range(200 * CHUNK)))
    decoder = DecoderProcess(LogFile(path), print, "log")
    with pytest.raises(ReplayInputError, match=r"stopped before its end.*status -9"):
        for count, _ in enumerate(decoder):
            if count == 0:
                assert decoder._pid is not None
                os.kill(decoder._pid, signal.SIGKILL)


def test_closing_early_ends_and_reaps_the_child(tmp_path: Path) -> None:
    """A reader that stops after one event: `close()` ends the child (which was blocked
    writing ahead) and collects it, leaving no process behind."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(log_line(f"e-{n}", "c-1", minute=n) + b"\n"
                              for n in range(300 * CHUNK // 10)) * 10)
    decoder = DecoderProcess(LogFile(path), print, "log")
    pid = decoder._pid
    assert pid is not None
    next(iter(decoder))
    decoder.close()
    assert decoder._pid is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _replay(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["replay", *args, "--no-progress"])
    return code, capsys.readouterr().err


def test_the_command_writes_the_same_bytes_with_and_without_the_decoder_process(
        write_rulebook: Callable[..., Any], write_log: Callable[..., Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow replay` (a second process decodes) and `--one-process`: identical actions,
    audit and errors files, and the same summary but for the timing, on a log with bad
    lines spread over several frames."""
    log = write_log(n=3 * CHUNK, customers=60)
    lines = log.read_bytes().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join(line if n % 97 else b"{broken" for n, line in
                                 enumerate(lines)) + b"\n")
    assert len(lines) > 2 * CHUNK
    outputs, summaries = [], []
    for name, extra in (("two", []), ("one", ["--one-process"])):
        files = [tmp_path / f"{name}-{kind}.jsonl" for kind in ("actions", "audit", "errors")]
        code, err = _replay(["--rules", str(write_rulebook()), "--input", str(mixed),
                             "--output", str(files[0]), "--audit", str(files[1]),
                             "--errors", str(files[2]), *extra], capsys)
        assert code == 0
        outputs.append([path.read_bytes() for path in files])
        summaries.append([line.split("; 0:")[0] for line in err.splitlines()])
    assert outputs[0] == outputs[1] and all(outputs[0])
    assert summaries[0] == summaries[1]


def test_ctrl_c_ends_both_processes_with_a_summary(tmp_path: Path) -> None:
    """SIGINT to the process group while the replay waits on stdin for more events: exit
    code 130 with the summary marked INTERRUPTED and no traceback, and the decoding
    process (which ignores SIGINT and was blocked reading stdin) is gone."""
    mark = uuid.uuid4().hex
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "REPLAY_TEST_MARK": mark}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "replay", "--rules",
         str(ROOT / "examples" / "default" / "rulebook.yaml"), "--input", "-", "--progress",
         "--output", str(tmp_path / "a.jsonl")],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(b"".join(log_line(f"e-{n}", f"c-{n % 50}", minute=n % 600) + b"\n"
                                 for n in range(3000)))
    process.stdin.flush()
    os.set_blocking(process.stderr.fileno(), False)
    seen = b""
    deadline = time.monotonic() + 60
    while b"events" not in seen and time.monotonic() < deadline:  # the progress bar drew
        seen += process.stderr.read() or b""
        time.sleep(0.05)
    assert b"events" in seen
    os.killpg(process.pid, signal.SIGINT)
    code = process.wait(timeout=30)
    os.set_blocking(process.stderr.fileno(), True)
    err = (seen + process.stderr.read()).decode()
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _has_mark(pid, mark)]
    process.stdin.close()
    assert code == 130, err
    assert "INTERRUPTED" in err and "Traceback" not in err
    assert left == []


def _has_mark(pid: str, mark: str) -> bool:
    try:
        return f"REPLAY_TEST_MARK={mark}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_a_refused_fork_falls_back_to_one_process(
        write_rulebook: Callable[..., Any], write_log: Callable[..., Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """When the system refuses a new process (`os.fork` raises), `touchflow replay` decodes
    in its own process and writes what it writes otherwise, leaking no pipe."""
    log = write_log()
    expected = tmp_path / "expected.jsonl"
    assert _replay(["--rules", str(write_rulebook()), "--input", str(log), "--output",
                    str(expected), "--one-process"], capsys)[0] == 0

    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    before = len(os.listdir("/proc/self/fd"))
    got = tmp_path / "got.jsonl"
    code, err = _replay(["--rules", str(write_rulebook()), "--input", str(log), "--output",
                         str(got)], capsys)
    assert code == 0 and "Traceback" not in err
    assert got.read_bytes() == expected.read_bytes() and expected.read_bytes()
    assert len(os.listdir("/proc/self/fd")) == before
