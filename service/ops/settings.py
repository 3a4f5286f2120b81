"""One frozen settings object, read from `TOUCHFLOW_*` environment variables.

A bad value stops start-up with `SettingsError`, whose message is one sentence naming the
variable, what it holds and what it accepts, e.g.
``TOUCHFLOW_STORE='redis://' is not valid: must be rocksdb:// or memory://.``
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.ops.defaults import ENV_PREFIX, PARTITIONS, TOMBSTONE_MARGIN_S

__all__ = ["DEFAULT_RULES", "Settings", "SettingsError", "load_settings"]

# The rulebook shipped inside the package (a copy of examples/default/rulebook.yaml), so an
# installed wheel starts without a checkout.
DEFAULT_RULES = Path(__file__).resolve().parents[1] / "rulebooks" / "default.yaml"
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._\-]+$")


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one readable sentence."""


class Settings(BaseSettings):
    """Everything a worker needs, from the environment. Frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False
    )

    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers, kafka://host:port[,host:port...]",
    )
    app_id: str = Field("touchflow", description="Consumer group id and internal topic prefix")
    topic_prefix: str = Field("touchpoints", description="Prefix of the public topics")
    rules: Path = Field(DEFAULT_RULES, description="Rulebook file (default: the one packaged "
                        "with touchflow, examples/default/rulebook.yaml)")
    store: Literal["rocksdb://", "memory://"] = Field("rocksdb://", description="Profile store")
    data_dir: Path = Field(Path("var/touchflow"), description="Local state directory")
    metrics_host: str = Field("0.0.0.0", description="Address of the metrics/health server")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Port of metrics/health")
    partitions: int = Field(PARTITIONS, ge=1, le=10_000,
                            description="Partitions of topics we create")
    replication_factor: int = Field(1, ge=1, le=10, description="Replication of created topics")
    # (x4 while the worker catches up: service/stream/runtime.py, `_CATCH_UP_LAG`)
    batch_max_events: int = Field(1000, ge=1, le=100_000, description="Max events per batch")
    batch_max_wait_ms: int = Field(10, ge=0, le=10_000, description="Max wait to fill a batch")
    session_timeout_ms: int = Field(
        10_000, ge=1_000, le=300_000, description="Consumer group session timeout"
    )
    runtime: Literal["kafka", "faust"] = Field(
        "kafka", description="kafka: lean aiokafka loop (default); faust: Faust agents"
    )
    channel_topics: bool = Field(True, description="Also send each action to actions.<channel>")
    profile_cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, le=1 << 40,
        description="Decoded profiles cached per process, in estimated heap bytes")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level")
    log_format: Literal["json", "console"] = Field(
        "json", description="json: one object per line; console: for humans")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (with a SASL_* protocol)")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL (default: the system's)")
    tombstone_margin_s: int = Field(
        TOMBSTONE_MARGIN_S, ge=0, le=10 * 365 * 86_400,
        description="Erasure tombstones are kept until the partition's event time passes the "
        "erasure by the rulebook's max lateness plus this margin (seconds)",
    )
    pii_salt: SecretStr | None = Field(
        None, description="Salt of the digests that stand for identifiers and personal data "
        "in dead letters (never logged); unset: a random salt per process, with a warning")
    # Client limits and waits an operator may need to change (a slow or distant cluster, a
    # large state); the defaults are the ones the benchmarks and the tests ran with.
    broker_timeout_s: float = Field(
        30.0, gt=0, le=3_600,
        description="How long a Kafka client may take to start, and a produce request to be "
        "answered, before it fails (seconds; also replay's topic reads and --publish)")
    ack_timeout_s: float = Field(
        60.0, gt=0, le=3_600,
        description="How long a batch waits for the broker to acknowledge its output or its "
        "changelog records before the batch fails and is retried (seconds)")
    producer_max_batch_bytes: int = Field(
        512 * 1024, ge=1_024, le=64 * 1024 * 1024,
        description="Largest record batch the worker's producer fills per topic partition "
        "(bytes; keep it under the broker's message.max.bytes)")
    fetch_max_bytes: int = Field(
        32 * 1024 * 1024, ge=1_024, le=1 << 30,
        description="Most bytes one fetch of the worker's consumer may return, all partitions "
        "together")
    partition_fetch_max_bytes: int = Field(
        4 * 1024 * 1024, ge=1_024, le=1 << 30,
        description="Most bytes one fetch may return per partition (the worker's consumer, "
        "both runtimes)")
    recovery_fetch_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1_024, le=1 << 30,
        description="Most bytes one fetch of the changelog may return while recovering, all "
        "partitions together")
    recovery_partition_fetch_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1_024, le=1 << 30,
        description="Most bytes one fetch of the changelog may return per partition while "
        "recovering")
    recovery_timeout_s: float = Field(
        900.0, gt=0, le=86_400,
        description="How long recovering the assigned partitions from the changelog may take "
        "before it fails and is retried (seconds)")
    batch_retry_max_s: float = Field(
        10.0, gt=0, le=3_600,
        description="Longest wait between retries of a failed batch (seconds; the wait starts "
        "at 0.5 s and doubles, plus up to 0.5 s at random)")
    retry_max_s: float = Field(
        30.0, gt=0, le=3_600,
        description="Longest wait between attempts to reach the broker at start-up, and "
        "between restarts of a failed background reader (seconds; from 1 s, doubling, plus "
        "up to 1 s at random)")
    recovery_write_bytes: int = Field(
        64 * 1024 * 1024, ge=1, le=1 << 40,
        description="Changelog values held in recovery before a store write (bytes, across "
        "the partitions recovered together): a key's older values within it are never written")

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        rest = value.removeprefix("kafka://")
        hosts = [h.strip() for h in rest.split(",")]
        if not hosts or not all(_HOSTPORT.match(h) for h in hosts):
            raise ValueError("must be kafka://host:port, comma-separated for several brokers")
        return "kafka://" + ",".join(hosts)

    @field_validator("app_id", "topic_prefix")
    @classmethod
    def _check_topic_name(cls, value: str) -> str:
        if not value or len(value) > 100 or not _TOPIC_CHARS.match(value):
            raise ValueError("must be 1-100 characters of letters, digits, '.', '_' or '-'")
        return value

    @property
    def bootstrap_servers(self) -> str:
        """The broker list as aiokafka wants it (host:port,host:port)."""
        return self.broker.removeprefix("kafka://")

    def topic(self, name: str) -> str:
        """The full name of a public topic, e.g. ``topic("events")`` -> ``touchpoints.events``."""
        return f"{self.topic_prefix}.{name}"

    def internal_topic(self, name: str) -> str:
        """The full name of an internal topic owned by this app id."""
        return f"{self.app_id}-{self.topic_prefix}.{name}"

    def group_member(self) -> dict[str, Any]:
        """Consumer-group keyword arguments for aiokafka consumers: liveness timeouts derived
        from the session timeout, manual commits, reading from the earliest offset."""
        session = self.session_timeout_ms
        return {
            "group_id": self.app_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session,
            "heartbeat_interval_ms": max(300, session // 5),
            "max_poll_interval_ms": max(300_000, session * 3),
            "rebalance_timeout_ms": max(20_000, session * 2),
            **self.kafka_security(),
        }

    def kafka_security(self) -> dict[str, Any]:
        """Security keyword arguments for aiokafka clients (empty for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if "SSL" in self.security_protocol:
            import ssl

            out["ssl_context"] = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
        return out


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    variable = ENV_PREFIX + name.upper()
    given = first.get("input")
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "literal_error":
        expected = message.removeprefix("Input should be ")
        message = f"must be {expected}"
    shown = "" if "password" in name or "salt" in name else f"={given!r}"
    if isinstance(given, dict):
        shown = ""
    return f"{variable}{shown} is not valid: {message}."


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (overrides win); raise `SettingsError` if bad."""
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_explain(error)) from None
    if settings.security_protocol.startswith("SASL") and not (
        settings.sasl_username and settings.sasl_password
    ):
        raise SettingsError(
            f"TOUCHFLOW_SECURITY_PROTOCOL={settings.security_protocol} needs "
            "TOUCHFLOW_SASL_USERNAME and TOUCHFLOW_SASL_PASSWORD."
        )
    return settings


# TOUCHFLOW_* variables read outside the settings (the embedded broker's binary, the soak test).
_OTHER_VARIABLES = frozenset({"TOUCHFLOW_TANSU_BIN", "TOUCHFLOW_SOAK"})


def known_variables() -> list[str]:
    """Every TOUCHFLOW_* variable the worker reads."""
    return sorted({ENV_PREFIX + name.upper() for name in Settings.model_fields}
                  | _OTHER_VARIABLES)


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The TOUCHFLOW_* names in `environ` that no setting reads, each with the closest known
    name (a likely misspelling) or None; only names are looked at, never values."""
    known = known_variables()
    out = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        # compared without the common prefix, which would make every name look close
        suffixes = [k.removeprefix(ENV_PREFIX) for k in known]
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), suffixes, n=1,
                                          cutoff=0.6)
        out.append((name, ENV_PREFIX + close[0] if close else None))
    return out


def warn_unknown_variables(log: logging.Logger, environ: Mapping[str, str]) -> None:
    """One warning per unknown TOUCHFLOW_* variable (its name and a suggestion, no value)."""
    for name, suggestion in unknown_variables(environ):
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        log.warning(f"unknown setting {name} is ignored{hint}",
                    extra={"variable": name, "suggestion": suggestion})


def settings_help() -> str:
    """The settings as a table for `touchflow worker --help`: variable, default, meaning
    (generated from the Settings model, so it cannot go stale)."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None:
            shown = "unset"
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = str(default)
        rows.append((ENV_PREFIX + name.upper(), shown, field.description or ""))
    width = max(len(row[0]) for row in rows)
    lines = ["settings (environment variables):"]
    for variable, shown, meaning in rows:
        lines.append(f"  {variable:<{width}}  {meaning}")
        lines.append(f"  {'':<{width}}  default: {shown}")
    return "\n".join(lines)
