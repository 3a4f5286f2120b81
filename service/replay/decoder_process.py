"""A log decoded in a second process while this one decides (`touchflow replay --input`).

Decoding and validating an event costs about as much as deciding it, and a replay is one
sequence of decisions, so the one split that keeps the output exact is a pipeline: a forked
child reads the log and runs the same `decode_event` on each line; the replaying process
rebuilds each event from its values (`event_from_fields`) and decides. Frames go through a
pipe in file order, bad lines between the events, so actions, audit, bad-record reports and
the summary are those of `decode_lines` in one process, byte for byte (tests hold the two
together). Used where `os.fork` exists and two or more CPUs are available.

Frames are a 4-byte little-endian length and a `marshal`led tuple: ("events", bytes read,
[event fields or (line, reason, message), ...], whether a bad line is among them), ("error",
kind, sentence) or ("end",). The child decodes up to `_AHEAD` frames ahead of the reader
(while the reader loads its rulebook, then whenever it is faster) and ignores Ctrl-C: the
parent decides when to stop, and a closed pipe ends the child. The command forks before it
starts any thread (a forked child gets only the forking thread, and locks held by others).
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import queue
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from itertools import repeat
from typing import Any, NoReturn

from schemas.event import Event, EventError, decode_event, event_fields, event_from_fields
from service.replay.reader import BadRecord, LogFile, OnBad, ReplayInputError, where_prefix

__all__ = ["DecoderProcess", "decoder_process_available", "start_decoder"]

_CHUNK = 512  # events per frame: a marshal call and a pipe write amortised over many
_AHEAD = 64  # frames the child may hold decoded before the reader takes them (~7 MB)
_PIPE_BYTES = 1024 * 1024  # the pipe's capacity asked for (Linux's default limit)
_HEADER = struct.Struct("<I")
_NOT_CARRIED = b""  # the raw line stays in the child (replay and compare never read it)


def decoder_process_available() -> bool:
    """Whether a log can be decoded in a forked process that runs beside this one."""
    if not hasattr(os, "fork") or sys.platform != "linux":
        return False
    return len(os.sched_getaffinity(0)) >= 2


def start_decoder(log: LogFile, on_bad: OnBad, label: str) -> DecoderProcess | None:
    """A `DecoderProcess` for `log`, or None where no second process can run beside this
    one or the system refuses one (then the caller decodes in its own process)."""
    if not decoder_process_available():
        return None
    try:
        return DecoderProcess(log, on_bad, label)
    except OSError:  # (fork refused: no process to spare)
        return None


class DecoderProcess:
    """The events of `log` decoded by a forked child, as `decode_lines(log, on_bad, label)`
    yields them (the raw line is not carried: `b""`). The child starts at once; iterate
    once, and `close()` (or a `with` block) ends the child if the iteration did not."""

    def __init__(self, log: LogFile, on_bad: OnBad, label: str) -> None:
        self.total_bytes = log.total_bytes
        self.bytes_read = 0  # on-disk bytes behind the events handed out so far
        self._on_bad = on_bad
        self._prefix = where_prefix(label)
        self._label = log.label
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError, AttributeError, ImportError):  # whole frames in
            # the pipe: the reader takes them without waiting for the child's writer thread
            # to get the GIL (Linux only)
            import fcntl

            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # the child
            os.close(read_end)
            _child(log, write_end)
        os.close(write_end)
        self._pid: int | None = pid
        self._stream = open(read_end, "rb", buffering=1024 * 1024)  # noqa: SIM115

    def position(self) -> tuple[int, int | None]:
        """(on-disk bytes decoded and handed out, the log's size), for the progress bar."""
        return self.bytes_read, self.total_bytes

    def __iter__(self) -> Iterator[tuple[Event, bytes]]:
        read = self._stream.read
        loads = marshal.loads
        unpack = _HEADER.unpack
        build = event_from_fields
        on_bad = self._on_bad
        prefix = self._prefix
        try:
            while True:
                head = read(4)
                if len(head) < 4:
                    self._died()
                size = unpack(head)[0]
                data = read(size)
                if len(data) < size:  # the child died half-way through a frame
                    self._died()
                frame = loads(data)
                if frame[0] != "events":
                    if frame[0] == "end":
                        return
                    if frame[1] == "input":
                        raise ReplayInputError(frame[2])
                    raise RuntimeError(f"decoding {self._label} failed: {frame[2]}")
                self.bytes_read = frame[1]
                if not frame[3]:  # no bad line: the loop runs in C (map and zip)
                    yield from zip(map(build, frame[2]), repeat(_NOT_CARRIED))
                    continue
                for fields in frame[2]:
                    if len(fields) == 3:  # a bad line: (number, reason, message)
                        on_bad(BadRecord(f"{prefix}{fields[0]}", fields[1], fields[2]))
                    else:
                        yield build(fields), _NOT_CARRIED
        finally:
            self.close()

    def _died(self) -> NoReturn:
        status = self._wait(block=True)
        raise ReplayInputError(f"decoding {self._label} stopped before its end (the decoding "
                               f"process ended with status {status})")

    def close(self) -> None:
        """Stop reading; end the child if it still runs (it gets a closed pipe, then a
        SIGTERM) and collect its exit status."""
        self._stream.close()
        if self._pid is not None and self._wait(block=False) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)
            self._wait(block=True)

    def _wait(self, *, block: bool) -> int | None:
        """The child's exit status once it has ended (None: still running)."""
        if self._pid is None:
            return None
        try:
            pid, status = os.waitpid(self._pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, 0
        if pid == 0:
            return None
        self._pid = None
        return os.waitstatus_to_exitcode(status)

    def __enter__(self) -> DecoderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(log: LogFile, fd: int) -> NoReturn:
    """The forked child: decode `log` into frames on `fd`, then exit without the
    interpreter's teardown (the parent's buffers and handlers are not the child's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # (decoded values are freed by reference counts: no cycles to collect)
    frames: queue.Queue[bytes | None] = queue.Queue(_AHEAD)
    writer = threading.Thread(target=_write, args=(frames, fd), daemon=True)
    writer.start()
    code = 0
    batch: list[Any] = []
    bad = False  # a bad line in `batch`

    def ship() -> None:
        frames.put(marshal.dumps(("events", log.bytes_read, batch, bad)))

    try:
        for number, raw in log:
            try:
                batch.append(event_fields(decode_event(raw)))
            except EventError as error:
                batch.append((number, error.reason, error.message))
                bad = True
            if len(batch) >= _CHUNK:
                ship()
                batch, bad = [], False
        ship()
        frames.put(marshal.dumps(("end",)))
    except ReplayInputError as error:  # what was decoded before it is delivered first
        ship()
        frames.put(marshal.dumps(("error", "input", str(error))))
    except BaseException as error:  # (reported to the parent, which raises)
        frames.put(marshal.dumps(("error", "crash", f"{type(error).__name__}: {error}")))
        code = 1
    frames.put(None)
    writer.join()
    os._exit(code)


def _write(frames: queue.Queue[bytes | None], fd: int) -> None:
    """The child's writer thread: each frame, length first; a closed pipe (the reader
    stopped) ends the child at once."""
    while (frame := frames.get()) is not None:
        data = memoryview(_HEADER.pack(len(frame)) + frame)
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            os._exit(0)
    os.close(fd)
