"""Settings: defaults, environment overrides, and one-sentence errors."""

from __future__ import annotations

import pytest

from service.ops.settings import SettingsError, load_settings


def test_defaults_follow_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without variables the settings use the documented defaults and topic names."""
    for name in ("TOUCHFLOW_BROKER", "TOUCHFLOW_TOPIC_PREFIX", "TOUCHFLOW_STORE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.broker == "kafka://127.0.0.1:9092"
    assert settings.store == "rocksdb://"
    assert settings.topic("events") == "touchpoints.events"
    assert settings.bootstrap_servers == "127.0.0.1:9092"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOUCHFLOW_* variables override the defaults."""
    monkeypatch.setenv("TOUCHFLOW_TOPIC_PREFIX", "shop")
    monkeypatch.setenv("TOUCHFLOW_STORE", "memory://")
    settings = load_settings()
    assert settings.topic("actions") == "shop.actions"
    assert settings.store == "memory://"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("TOUCHFLOW_STORE", "redis://", "TOUCHFLOW_STORE='redis://' is not valid: must be"),
        ("TOUCHFLOW_BROKER", "localhost", "TOUCHFLOW_BROKER='localhost' is not valid"),
        ("TOUCHFLOW_METRICS_PORT", "99999", "TOUCHFLOW_METRICS_PORT='99999' is not valid"),
        ("TOUCHFLOW_TOPIC_PREFIX", "a b", "TOUCHFLOW_TOPIC_PREFIX='a b' is not valid"),
        ("TOUCHFLOW_ACK_TIMEOUT_S", "0", "TOUCHFLOW_ACK_TIMEOUT_S='0' is not valid: "
         "Input should be greater than 0"),
        ("TOUCHFLOW_BROKER_TIMEOUT_S", "soon", "TOUCHFLOW_BROKER_TIMEOUT_S='soon' is not valid"),
        ("TOUCHFLOW_FETCH_MAX_BYTES", "12", "TOUCHFLOW_FETCH_MAX_BYTES='12' is not valid"),
        ("TOUCHFLOW_BATCH_RETRY_MAX_S", "-1", "TOUCHFLOW_BATCH_RETRY_MAX_S='-1' is not valid"),
    ],
)
def test_bad_value_gives_one_sentence(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    """A bad setting raises SettingsError: one line naming the variable and what it accepts."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and message.endswith(".")


def test_sasl_needs_credentials_and_hides_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL without credentials is refused; the password is a SecretStr, never printed."""
    monkeypatch.setenv("TOUCHFLOW_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="TOUCHFLOW_SASL_USERNAME"):
        load_settings()
    monkeypatch.setenv("TOUCHFLOW_SASL_USERNAME", "svc")
    monkeypatch.setenv("TOUCHFLOW_SASL_PASSWORD", "hunter2")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert settings.kafka_security()["sasl_plain_password"] == "hunter2"


def test_readme_settings_table_lists_every_setting() -> None:
    """Each setting of the model has a row in README's "Settings" table (a setting added
    without its documentation fails here)."""
    from pathlib import Path

    from service.ops.settings import Settings

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `TOUCHFLOW_")]
    for name in Settings.model_fields:
        variable = f"TOUCHFLOW_{name.upper()}"
        # a row may name several variables by their common prefix (`TOUCHFLOW_LOG_LEVEL` /
        # `_FORMAT`): the suffix after the row's first variable's prefix counts
        assert any(variable in row or _short_form(row, variable) for row in rows), variable


def _short_form(row: str, variable: str) -> bool:
    """True when `row` names `variable` as `_SUFFIX` after a variable sharing its prefix."""
    first = row.split("`")[1]
    parts = variable.split("_")
    for cut in range(1, len(parts)):
        if first.startswith("_".join(parts[:cut]) + "_") and \
                f"`_{'_'.join(parts[cut:])}`" in row:
            return True
    return False
