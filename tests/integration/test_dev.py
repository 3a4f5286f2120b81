"""`touchflow dev` (what `make run` starts) as a newcomer meets it: its own embedded broker,
a worker, the simulator and a live feed of explained actions; no warning on a clean start,
and Ctrl-C stops all of it with exit code 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.tools.embedded import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# A live action line: time, customer, action -> channel, score, because <reason>.
ACTION = re.compile(r"^\d\d:\d\d:\d\d +\S+ +\S+ +-> \S+ +score +[\d.]+ +because \S")


def test_dev_shows_explained_actions_and_stops_cleanly(tmp_path: Path) -> None:
    """Within a minute of start `touchflow dev` prints actions that each say why; stderr
    has no warning (a dev session draws its own PII salt) and no traceback; SIGINT ends it
    with exit code 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHFLOW_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "dev", "--rate", "200",
         "--metrics-port", str(free_port())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    actions: list[str] = []
    deadline = time.monotonic() + 90
    watchdog = threading.Timer(120, process.kill)  # a silent hang must not hang the suite
    watchdog.start()
    try:
        for line in process.stdout:
            if ACTION.match(line):
                actions.append(line)
                if len(actions) >= 3:
                    break
            if time.monotonic() > deadline:
                break
    finally:
        watchdog.cancel()
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert len(actions) >= 3, stderr[-2000:]
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    assert not [line for line in stderr.splitlines() if " warning " in f" {line.lower()} "], \
        stderr[-2000:]
