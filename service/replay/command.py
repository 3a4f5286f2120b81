"""`touchflow replay`: the production decision logic over an event log, offline.

    touchflow replay --rules R.yaml --input LOG.jsonl[.gz] [--context C.jsonl]
                     [--output ACTIONS.jsonl] [--audit DECISIONS.jsonl] [--report R.html]
    touchflow replay --rules R.yaml --input LOG --context-from-topic   (reads <prefix>.context)
    touchflow replay --rules A.yaml --compare B.yaml --input LOG [--output CHANGES.jsonl]
    touchflow replay --rules R.yaml --from-topic touchpoints.events --since -7d [--until T]
    touchflow replay --input LOG --publish staging.events --speed 10

Actions go to stdout (or `--output`) as JSONL; the summary, bad-line reports and the progress
bar go to stderr, so stdout stays machine-readable. Exit codes: 0 done, 2 unusable input or
rulebook, 130 interrupted (what was written so far is complete lines, and a summary is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from service.ops.defaults import ENV_PREFIX, PARTITIONS
from service.replay.reader import BadRecord, ReplayInputError

if TYPE_CHECKING:
    from schemas.event import Event
    from service.domain.context_table import ContextTable
    from service.ops.settings import Settings
    from service.replay.progress import Position, Progress
    from service.replay.publish import PublishResult

    Events = Iterable[tuple[Event, bytes]]
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register", "run_replay"]

_SHOWN_BAD = 20


def register(subparsers: SubParsers) -> None:
    """Add the `replay` subcommand to the `touchflow` parser."""
    parser = subparsers.add_parser(
        "replay", help="run the decision logic over an event log or a topic's time range",
        description="Replay an event log through the exact production decision logic, with "
        "event time as the only clock: the same input gives byte-identical output.",
    )
    source = parser.add_argument_group("input")
    source.add_argument("--input", "-i", metavar="LOG",
                        help="JSONL event log, plain or gzip ('-' for stdin)")
    source.add_argument("--from-topic", metavar="NAME", action="append", default=[],
                        help="read a topic instead (repeat for several, e.g. events and "
                        "responses)")
    source.add_argument("--since", metavar="T", help="with --from-topic: first record time "
                        "(ISO-8601, date, epoch ms, or -7d/-12h)")
    source.add_argument("--until", metavar="T", help="with --from-topic: last record time "
                        "(default: the end of the topic when the replay starts)")
    source.add_argument("--broker", metavar="URL",
                        help="kafka://host:port (default: TOUCHFLOW_BROKER)")
    source.add_argument("--one-process", action="store_true",
                        help="decode the log in this process too (by default a second "
                        "process decodes it when two or more CPUs are available; the output "
                        "is the same)")
    source.add_argument("--context", metavar="FILE",
                        help='reference data, JSONL lines {"key": ..., "value": ..., '
                        '"valid_from": ...} (no valid_from: from the beginning of time)')
    source.add_argument("--context-from-topic", action="store_true",
                        help="read the reference data from <prefix>.context on the broker, "
                        "as the worker does (record timestamps stand in for valid_from)")
    rules = parser.add_argument_group("decisions")
    rules.add_argument("--rules", "-r", metavar="FILE", help="the rulebook (A when comparing)")
    rules.add_argument("--partitions", type=int, metavar="N",
                       help="the workers' partition count, for learned propensities (kept "
                       "per partition); default TOUCHFLOW_PARTITIONS")
    rules.add_argument("--compare", metavar="OTHER_RULES",
                       help="diff the decisions of --rules (A) and this rulebook (B)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", metavar="FILE", default="-",
                     help="actions as JSONL (with --compare: the changed decisions); "
                     "default stdout")
    out.add_argument("--audit", metavar="FILE", help="audit (decision) records as JSONL")
    out.add_argument("--operations", metavar="FILE",
                     help="cross-customer signal messages (e.g. product_issue) as JSONL")
    out.add_argument("--report", metavar="FILE.html",
                     help="self-contained HTML report with charts")
    out.add_argument("--errors", metavar="FILE", help="every bad input record as JSONL")
    bar = out.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show the progress bar even when stderr is not a terminal")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    pub = parser.add_argument_group("publish")
    pub.add_argument("--publish", metavar="TOPIC",
                     help="re-publish the input to TOPIC instead of deciding")
    pub.add_argument("--speed", type=float, default=1.0, metavar="X",
                     help="pace: X times the log's own pace (0 = as fast as possible)")
    pub.add_argument("--max-gap", type=float, metavar="SECONDS",
                     help="never wait longer than this between two events")
    parser.set_defaults(handler=run_replay)


class _Reporter:
    """Counts bad input records, prints the first ones, writes all to --errors."""

    def __init__(self, errors: IO[bytes] | None) -> None:
        self.count = 0
        self.errors = errors
        self.sink: Callable[[BadRecord], None] | None = None

    def __call__(self, record: BadRecord) -> None:
        from schemas.codec import dumps_line

        self.count += 1
        if self.sink is not None:
            self.sink(record)
        if self.errors is not None:
            self.errors.write(dumps_line(record.to_dict()))
        if self.count <= _SHOWN_BAD:
            _say(f"skipped bad input {record}")
        elif self.count == _SHOWN_BAD + 1:
            _say("more bad input records follow; counted in the summary"
                 + ("" if self.errors else " (--errors FILE lists them all)"))


def _say(text: str) -> None:
    print(f"touchflow replay: {text}", file=sys.stderr, flush=True)


def _check(args: argparse.Namespace) -> str | None:
    if bool(args.input) == bool(args.from_topic):
        return "give exactly one input: --input LOG or --from-topic NAME"
    if (args.since or args.until) and not args.from_topic:
        return "--since and --until select a time range of --from-topic"
    if args.context and args.context_from_topic:
        return "give one source of reference data: --context FILE or --context-from-topic"
    if args.publish:
        if args.compare or args.audit or args.report:
            return "--publish only re-publishes: drop --compare, --audit and --report"
        return None
    if not args.rules:
        return "--rules FILE is required (the rulebook to replay)"
    if args.compare and args.audit:
        return "--audit writes one rulebook's records: replay each rulebook on its own"
    return _unwritable(args)


def _unwritable(args: argparse.Namespace) -> str | None:
    """Say which output file cannot be written, before the replay runs (not after it)."""
    for option in ("output", "audit", "operations", "report", "errors"):
        path = getattr(args, option)
        if path is None or path == "-":
            continue
        folder = Path(path).parent
        if not folder.is_dir():
            return f"cannot write --{option} {path}: the directory {folder} does not exist"
        if Path(path).is_dir():
            return f"cannot write --{option} {path}: it is a directory"
    return None


@contextlib.contextmanager
def _open_out(path: str | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    else:
        try:
            handle = open(path, "wb", buffering=1024 * 1024)  # noqa: SIM115
        except OSError as error:  # (missing folders are caught before: _unwritable)
            raise ReplayInputError(f"cannot write {path}: {error.strerror}") from None
        with handle:
            yield handle


def run_replay(args: argparse.Namespace) -> int:
    """The `replay` handler; returns the exit code."""
    problem = _check(args)
    if problem:
        _say(problem)
        return 2
    try:
        return _run(args)
    except ReplayInputError as error:
        _say(str(error))
        return 2
    except BrokenPipeError:  # `| head`: the reader left, that's fine
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115
        return 0


def _source(args: argparse.Namespace, reporter: _Reporter, stack: contextlib.ExitStack
            ) -> tuple[Events, Position, str]:
    """(iterable of (event, raw), position callable, label) for the chosen input; a log to
    decide on is decoded by a second process where one can run beside this one
    (service/replay/decoder_process.py)."""
    from service.replay.reader import LogFile, decode_lines

    if args.input:
        log = LogFile(args.input)
        if not (args.publish or args.one_process):
            from service.replay.decoder_process import start_decoder

            decoder = start_decoder(log, reporter, log.label)
            if decoder is not None:
                stack.enter_context(decoder)
                return decoder, decoder.position, log.label
        return (decode_lines(log, reporter, log.label),
                lambda: (log.bytes_read, log.total_bytes), log.label)
    from service.replay.topic import TopicSource, parse_time

    settings = _settings(args)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as error:
        raise ReplayInputError(str(error)) from None
    topic = TopicSource(settings, list(args.from_topic), reporter, since_ms=since,
                        until_ms=until)
    return topic, topic.position, topic.label


def _progress(args: argparse.Namespace, position: Position) -> Progress | None:
    from service.replay.progress import Progress

    show = args.progress if args.progress is not None else sys.stderr.isatty()
    return Progress(position) if show else None


def _run(args: argparse.Namespace) -> int:
    from service.replay.progress import format_duration

    with _open_out(args.errors) as errors, contextlib.ExitStack() as stack:
        reporter = _Reporter(errors)
        events, position, label = _source(args, reporter, stack)  # (a decoder starts now)
        context = _load_context(args, reporter)
        progress = _progress(args, position)
        try:
            if args.publish:
                return _publish(args, events, progress)
            if args.compare:
                return _compare(args, events, context, reporter, progress, label)
            return _single(args, events, context, reporter, progress, label,
                           format_duration)
        finally:
            if progress is not None:
                progress.close()


def _partitions(args: argparse.Namespace) -> int:
    if args.partitions is not None:
        if args.partitions < 1:
            raise ReplayInputError("--partitions must be at least 1")
        return int(args.partitions)
    if not args.broker and not _touchflow_variables():
        return PARTITIONS  # what the settings would say, without importing them
    partitions: int = _settings(args).partitions
    return partitions


def _touchflow_variables() -> bool:
    """Whether any TOUCHFLOW_* variable is set (the settings read names in any case)."""
    return any(name.upper().startswith(ENV_PREFIX) for name in os.environ)


def _settings(args: argparse.Namespace) -> Settings:
    from service.ops.settings import load_settings

    return load_settings(**({"broker": args.broker} if args.broker else {}))


def _load_context(args: argparse.Namespace, reporter: _Reporter) -> ContextTable:
    """The reference data, versioned in time: a file, the context topic, or none."""
    from service.domain.context_table import ContextTable
    from service.replay.reader import load_context

    if args.context:
        return load_context(args.context, reporter)
    if args.context_from_topic:
        from service.replay.context_topic import load_context_topic
        from service.stream.topics import TopicNames

        settings = _settings(args)
        topic = TopicNames.from_settings(settings).context
        table = load_context_topic(settings, topic, reporter)
        count = len(table)
        _say(f"context read from {topic}: {count:,} {'key' if count == 1 else 'keys'} "
             "present at its end")
        return table
    return ContextTable()


def _single(args: argparse.Namespace, events: Events, context: ContextTable,
            reporter: _Reporter, progress: Progress | None, label: str,
            format_duration: Callable[[float], str]) -> int:
    from service.domain.rules import load_rulebook
    from service.ops.quick_exit import keep_until_exit
    from service.replay.runner import ReplayResult, RunStats, replay_stream

    rulebook = load_rulebook(args.rules)
    result = ReplayResult(RunStats())
    reporter.sink = result.on_bad
    again = None
    if args.input and args.input != "-":  # a file can be read again (replay_stream says why)
        from service.replay.reader import LogFile, decode_lines

        def again() -> Events:
            return decode_lines(LogFile(args.input), result.on_bad, label)

    with _open_out(args.output) as output, _open_out(args.audit) as audit, \
            _open_out(args.operations) as operations:
        replay_stream(events, rulebook, context=context, output=output, audit=audit,
                      operations=operations, result=result, observe=bool(args.report),
                      tick=progress, partitions=_partitions(args), again=again)
    if progress is not None:
        progress.close()
    stats = result.stats
    _say(f"{label}: {stats.events:,} events ({stats.processed:,} decided, "
         f"{stats.duplicates:,} duplicates, {stats.late:,} late, "
         + (f"{stats.ignored:,} ignored as erased, " if stats.ignored else "")
         + f"{stats.errors:,} decide() errors, "
         f"{result.bad_records:,} bad records skipped) -> {stats.actions:,} actions, "
         f"{stats.decisions:,} audit records, {stats.signals:,} signals; "
         f"rulebook {stats.rulebook_version}; "
         f"{format_duration(result.seconds)} ({result.events_per_s:,.0f} events/s)"
         + (" - INTERRUPTED" if result.interrupted else ""))
    for line in result.decision_errors[:_SHOWN_BAD]:
        _say(line)
    if result.reruns:
        _say(f"decide() failed on customers not seen failing before: replayed {result.reruns} "
             "more time(s) so that the failed events leave no trace, as in the worker")
    if result.inexact:
        _say(f"warning: {result.inexact:,} customers' later decisions may differ from the "
             "worker's (a decide() failure left their profiles half-updated; replay a file "
             "into file outputs to have them rolled back)")
    if result.bad_reasons:
        _say("bad records by reason: " + ", ".join(
            f"{reason} {count:,}" for reason, count in result.bad_reasons.most_common()))
    if args.report:
        from service.replay.html_report import write_report

        write_report(Path(args.report), [result], source=label)
        _say(f"report written to {args.report}")
    keep_until_exit(result.state)  # the profiles: not freed one by one before the exit
    return 130 if result.interrupted else 0


def _compare(args: argparse.Namespace, events: Events, context: ContextTable,
             reporter: _Reporter, progress: Progress | None, label: str) -> int:
    from service.domain.rules import load_rulebook
    from service.replay.diff import compare_stream, format_table
    from service.replay.runner import ReplayResult, RunStats

    rulebook_a = load_rulebook(args.rules)
    rulebook_b = load_rulebook(args.compare)
    result_a = ReplayResult(RunStats())
    reporter.sink = result_a.on_bad
    changes_path = args.output if args.output != "-" else None
    with _open_out(changes_path) as changes:
        comparison = compare_stream(events, rulebook_a, rulebook_b, context=context,
                                    changes_out=changes, result_a=result_a, tick=progress,
                                    partitions=_partitions(args))
    comparison.b.bad_records = result_a.bad_records
    if progress is not None:
        progress.close()
    sys.stdout.write(format_table(comparison))
    sys.stdout.flush()
    _say(f"{label}: {comparison.a.stats.events:,} events compared, "
         f"{comparison.total_changes:,} changed decisions, "
         f"{result_a.bad_records:,} bad records skipped"
         + (" - INTERRUPTED" if comparison.interrupted else ""))
    if args.report:
        from service.replay.html_report import write_report

        write_report(Path(args.report), [comparison.a, comparison.b], comparison=comparison,
                     source=label)
        _say(f"report written to {args.report}")
    return 130 if comparison.interrupted else 0


def _publish(args: argparse.Namespace, events: Events, progress: Progress | None) -> int:
    import asyncio
    import signal

    from service.replay.publish import publish_events

    settings = _settings(args)

    async def main() -> PublishResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            return await publish_events(events, settings, args.publish, speed=args.speed,
                                        max_gap_s=args.max_gap, tick=progress, stop=stop)
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        result = asyncio.run(main())
    except ConnectionError as error:
        raise ReplayInputError(str(error)) from None
    if progress is not None:
        progress.close()
    _say(f"published {result.sent:,} events to {args.publish} in {result.seconds:.1f} s "
         f"({result.events_per_s:,.0f} events/s; the log spans {result.log_span_s:,.0f} s)"
         + (" - INTERRUPTED" if result.interrupted else ""))
    return 130 if result.interrupted else 0
