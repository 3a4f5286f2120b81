"""Event logs in: JSONL files (plain or gzip, detected by content), and context reference data.

A log is one touchpoint event per line, exactly the bytes a producer would put on
`<prefix>.events`. Blank lines are skipped. A line that is not a valid event is reported as a
`BadRecord` (where, reason, message) through a callback and counted; reading goes on.

Order matters only per profile key: the worker applies each customer's events in the order
they sit in that customer's partition, and replay applies them in file order, so a log whose
per-customer order is the production order replays to the production output.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from schemas.event import Event, EventError, decode_event

if TYPE_CHECKING:
    from service.domain.context_table import ContextTable

__all__ = [
    "CONTEXT_SHAPE",
    "BadRecord",
    "LogFile",
    "OnBad",
    "ReplayInputError",
    "decode_lines",
    "load_context",
    "where_prefix",
]

CONTEXT_SHAPE = ('context records must be objects {"key": "...", "value": ...} with an '
                 "optional valid_from (epoch ms, or ISO-8601 with an offset)")
_GZIP_MAGIC = b"\x1f\x8b"
_READ_BUFFER = 1024 * 1024  # read-ahead of a log file: fewer system calls, same bytes


class ReplayInputError(ValueError):
    """An input that cannot be read at all (missing file, unreadable gzip); one sentence."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One rejected input record: where it is (`file:line` or `topic/partition@offset`)."""

    where: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason, "message": self.message}

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}: {self.message}"


OnBad = Callable[[BadRecord], None]


class LogFile:
    """A JSONL event log on disk (gzip or plain, by magic bytes) or `-` for stdin.

    Iterating yields `(line_number, raw_line)` for every non-blank line, line numbers starting
    at 1. `bytes_read` / `total_bytes` measure progress in on-disk (compressed) bytes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.label = "<stdin>" if self.path == "-" else self.path
        self.total_bytes: int | None = None
        self._raw: IO[bytes] | None = None
        if self.path != "-":
            try:
                self.total_bytes = os.path.getsize(self.path)
            except OSError as exc:
                raise ReplayInputError(
                    f"cannot read the log {self.path}: {exc.strerror or exc}"
                ) from None

    @property
    def bytes_read(self) -> int:
        """On-disk bytes consumed so far (an estimate for progress and ETA)."""
        raw = self._raw
        if raw is None or raw.closed:
            return self.total_bytes or 0
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    def _open(self) -> IO[bytes]:
        if self.path == "-":
            stream: IO[bytes] = sys.stdin.buffer
            head = stream.peek(2)[:2] if isinstance(stream, io.BufferedReader) else b""
            if head == _GZIP_MAGIC:
                return io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), _READ_BUFFER)
            return stream
        try:
            raw = open(self.path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115
        except OSError as exc:
            raise ReplayInputError(
                f"cannot read the log {self.path}: {exc.strerror or exc}"
            ) from None
        self._raw = raw
        if raw.read(2) == _GZIP_MAGIC:
            raw.seek(0)
            return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _READ_BUFFER)
        raw.seek(0)
        return raw

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        stream = self._open()
        try:
            number = 0
            try:
                for line in stream:
                    number += 1
                    if line.isspace():
                        continue
                    yield number, line
            except (OSError, EOFError) as exc:  # truncated or corrupt gzip
                raise ReplayInputError(
                    f"{self.label}: the log cannot be read after line {number}: {exc}"
                ) from None
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
            if self._raw is not None:
                self._raw.close()


def decode_lines(
    lines: Iterator[tuple[int, bytes]] | LogFile, on_bad: OnBad, label: str = ""
) -> Iterator[tuple[Event, bytes]]:
    """Decode each line into an `Event`; report the bad ones to `on_bad` and go on."""
    prefix = where_prefix(label)
    for number, raw in lines:
        try:
            event = decode_event(raw)
        except EventError as error:
            on_bad(BadRecord(f"{prefix}{number}", error.reason, error.message))
            continue
        yield event, raw


def where_prefix(label: str) -> str:
    """What precedes a line number in a `BadRecord.where` of the log `label`."""
    return f"{label}:" if label else "line "


def load_context(path: str | Path, on_bad: OnBad | None = None) -> ContextTable:
    """Read reference data from JSONL lines ``{"key": ..., "value": ..., "valid_from": ...}``.

    Lines are applied in order with the worker's semantics (`apply_context_record`): a null
    value deletes the key from `valid_from` on, and of two lines for one key and instant the
    later wins. A file has no record timestamp, so a line without `valid_from` holds from the
    beginning of time. Malformed lines go to `on_bad`.
    """
    from service.domain.context_table import ContextTable
    from service.stream.context import apply_context_record

    table = ContextTable()
    log = LogFile(path)
    for number, raw in log:
        if not apply_context_record(table, None, raw.strip(), None) and on_bad is not None:
            on_bad(BadRecord(f"{log.label}:{number}", "bad_context", CONTEXT_SHAPE))
    return table
