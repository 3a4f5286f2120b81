"""The `touchflow` command line: dev, worker, simulate, replay, rules check/test, schemas
export, profile show|export.

Every expected failure (bad setting, bad rulebook, unreachable broker, unwritable data
directory) ends with one readable sentence on stderr and a non-zero exit code, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
# Subcommands contributed by their own modules: each has register(subparsers).
_PLUGINS = ("service.tools.simulator", "service.replay.command", "service.tools.uplift",
            "service.tools.access")
#: The command each plugin module adds: a command line naming one imports only that module
#: (the simulator alone imports asyncio, tens of milliseconds of every replay's start-up).
_PLUGIN_OF = {"simulate": "service.tools.simulator", "replay": "service.replay.command",
              "report": "service.tools.uplift", "profile": "service.tools.access"}


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging
    import os

    from service.ops.logs import configure_logging
    from service.ops.settings import load_settings, warn_unknown_variables
    from service.stream.worker import run_worker

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    warn_unknown_variables(logging.getLogger("service.stream.worker"), os.environ)
    return run_worker(settings)


def _cmd_dev(args: argparse.Namespace) -> int:
    from service.tools.dev import run_dev

    return run_dev(rate=args.rate, customers=args.customers, seed=args.seed,
                   metrics_port=args.metrics_port)


def _cmd_rules_check(args: argparse.Namespace) -> int:
    from service.domain.rules import RulebookError, load_rulebook, parse_rulebook

    failed = 0
    for path in args.files:
        try:  # "-": the rulebook on stdin
            rulebook = (parse_rulebook(sys.stdin.read(), "<stdin>") if path == "-"
                        else load_rulebook(path))
        except RulebookError as error:
            print(str(error), file=sys.stderr)
            failed += 1
        else:
            print(f"{'<stdin>' if path == '-' else path}: ok, version {rulebook.version}")
    return 1 if failed else 0


def _cmd_rules_test(args: argparse.Namespace) -> int:
    from service.tools.cases import run_files

    out, err, code = run_files(args.files)
    for line in out:
        print(line)
    for line in err:
        print(line, file=sys.stderr)
    return code


def _cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_schemas

    written = export_schemas(Path(args.out))
    from service.domain.rulebook_schema import RULEBOOK_SCHEMA_FILE, render_rulebook_schema

    rulebook_schema = Path(args.out) / RULEBOOK_SCHEMA_FILE  # for editors (examples/README.md)
    rulebook_schema.write_bytes(render_rulebook_schema())
    written.append(rulebook_schema)
    for path in written:
        print(path)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full argument parser, with every available subcommand (`command`: a plugin's
    command, when only that plugin is needed)."""
    parser = argparse.ArgumentParser(
        prog="touchflow", description="Streaming next-best-action engine for touchpoints."
    )
    from service import __version__

    parser.add_argument("--version", action="version", version=f"touchflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    dev = sub.add_parser("dev", help="embedded broker + worker + simulator + metrics, one box")
    dev.add_argument("--rate", type=float, default=50.0, help="simulated events per second")
    dev.add_argument("--customers", type=int, default=2000)
    dev.add_argument("--seed", type=int, default=7)
    dev.add_argument("--metrics-port", type=int, default=9108)
    dev.set_defaults(handler=_cmd_dev)
    worker = sub.add_parser("worker", help="run a worker (settings from TOUCHFLOW_* variables)",
                            description="Run one worker until SIGTERM/SIGINT; settings come "
                            "from the environment (unknown TOUCHFLOW_* names are warned about).",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _epilog_when_shown(worker)
    worker.set_defaults(handler=_cmd_worker)
    rules = sub.add_parser("rules", help="rulebook tools")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rules_sub.required = True
    check = rules_sub.add_parser("check", help="validate rulebooks; errors name file:line:field")
    check.add_argument("files", nargs="+", metavar="FILE", help="a rulebook ('-': stdin)")
    check.set_defaults(handler=_cmd_rules_check)
    cases = rules_sub.add_parser("test", help="run persona regression cases (cases.yaml); "
                                 "exit 1 with a diff when one fails")
    cases.add_argument("files", nargs="+")
    cases.set_defaults(handler=_cmd_rules_test)
    schemas = sub.add_parser("schemas", help="wire contract tools")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", metavar="SUBCOMMAND")
    schemas_sub.required = True
    export = schemas_sub.add_parser(
        "export", help="write the JSON Schema files and the AsyncAPI document (asyncapi.yaml)")
    export.add_argument("--out", default="schemas/jsonschema")
    export.set_defaults(handler=_cmd_schemas_export)
    plugin = _PLUGIN_OF.get(command) if command is not None else None
    for name in (plugin,) if plugin is not None else _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def _epilog_when_shown(parser: argparse.ArgumentParser) -> None:
    """`touchflow worker --help`'s table of settings, made when the help is shown: the
    settings module (pydantic-settings) is not imported by commands that do not read it."""
    shown = parser.format_help

    def format_help() -> str:
        if parser.epilog is None:
            from service.ops.settings import settings_help

            parser.epilog = settings_help()
        return shown()

    parser.format_help = format_help  # type: ignore[method-assign]


# Errors that stop a command with their one sentence (exit 2), by the module defining them:
# an error can only have been raised if its module was imported, so none is imported here.
_STOPPING = (("service.ops.settings", "SettingsError"), ("service.stream.worker", "StartupError"),
             ("service.stream.store", "StoreError"),
             ("service.tools.embedded.broker", "BrokerError"))


def _is_one_of(error: BaseException, names: tuple[tuple[str, str], ...]) -> bool:
    return any(module is not None and isinstance(error, getattr(module, name))
               for module, name in ((sys.modules.get(where), name) for where, name in names))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `touchflow`; returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(words[0] if words else None).parse_args(words)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if _is_one_of(error, _STOPPING):
            print(f"touchflow: {error}", file=sys.stderr)
            return 2
        if _is_one_of(error, (("service.domain.rules", "RulebookError"),)):
            print(f"touchflow: the rulebook is invalid:\n{error}", file=sys.stderr)
            return 2
        raise


def run() -> None:
    """The `touchflow` program (and `python -m service`): `main`, then, when the command kept
    large state for the end (service/ops/quick_exit.py), an exit without the interpreter's
    teardown; otherwise a normal exit."""
    from service.ops.quick_exit import exit_now_if_kept

    code = main()
    exit_now_if_kept(code)
    raise SystemExit(code)
