"""Right of access on the embedded broker: `touchflow profile export|show --from-changelog`
reads what a running worker's changelog holds about one customer (an alias followed to the
profile it was merged into; an erased customer holds nothing) and fails in one sentence
when the broker is unreachable."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import orjson

from tests.events import keyed
from tests.integration.conftest import ROOT, WorkerEnv, produce


def _profile(env: WorkerEnv, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", "profile", *args], cwd=ROOT,
                          env=env.env(**extra), capture_output=True, text=True, timeout=120,
                          check=False)


async def test_profile_export_from_the_changelog_follows_aliases_and_sees_erasure(
        worker_env: WorkerEnv) -> None:
    """Pings of an anonymous visitor, a login linking them to customer c-42, more pings, and
    a second customer who asks for erasure: exporting the anonymous id from the changelog
    names its redirect and gives c-42's merged profile (every ping counted once, the alias
    listed); the erased customer has "no profile held", with the erasure time its tombstone
    keeps (exit 1); an unreachable broker is one sentence (exit 2)."""
    worker = worker_env.start_worker()
    worker_env.wait_ready(worker)
    await produce(worker_env.broker.bootstrap, worker_env.topic("events"), [
        keyed("p1", "ping", 1, anonymous_id="a-9"),
        keyed("p2", "ping", 2, anonymous_id="a-9"),
        keyed("p3", "ping", 3, anonymous_id="a-9"),
        keyed("login", "identified", 4, customer_id="c-42", anonymous_id="a-9"),
        keyed("p4", "ping", 5, customer_id="c-42"),
        keyed("p5", "ping", 6, customer_id="c-42"),
        keyed("q1", "ping", 1, customer_id="c-gone"),
        keyed("bye", "erasure_requested", 2, customer_id="c-gone"),
    ])
    deadline = time.monotonic() + 60
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = _profile(worker_env, "export", "anonymous_id:a-9", "--from-changelog")
        if done.returncode == 0:
            document = orjson.loads(done.stdout)
            if document["profile"]["scores"].get("pings") == 5.0:
                break
        time.sleep(1)
    assert document["requested_key"] == "anonymous_id:a-9", worker_env.logs()[-2000:]
    assert [(r["key"], r["to"]) for r in document["redirects"]] == [
        ("anonymous_id:a-9", "customer_id:c-42")]
    profile = document["profile"]
    assert profile["key"] == "customer_id:c-42" and profile["scores"] == {"pings": 5.0}
    assert profile["linked_identifiers"] == ["anonymous_id:a-9"]
    assert profile["events_remembered"] == 6  # five pings and the login, each once
    assert document["source"].startswith(f"changelog {worker_env.app_id}-")

    deadline = time.monotonic() + 30
    while True:
        gone = _profile(worker_env, "show", "--customer-id", "c-gone", "--from-changelog")
        if "erased at" in gone.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert gone.stdout.startswith("no profile held for customer_id:c-gone (changelog ")
    assert gone.stdout.rstrip().endswith("; erased at 2026-03-02T09:02:00.000Z.")

    down = _profile(worker_env, "show", "customer_id:c-42", "--from-changelog",
                    TOUCHFLOW_BROKER="kafka://127.0.0.1:1")
    assert down.returncode == 2 and down.stderr.count("\n") == 1, down.stderr
    assert down.stderr.startswith("touchflow profile: cannot reach the Kafka broker at "
                                  "kafka://127.0.0.1:1")
    assert worker_env.stop(worker) == 0
