"""A Faust user's own app embedding Touchflow (examples/faust_embedding/), started
with one command, on the real embedded broker."""

from __future__ import annotations

import orjson

from tests.events import log_line
from tests.integration.conftest import WorkerEnv, produce, wait_for_records


async def test_a_users_agent_forwards_call_center_actions_next_to_touchflow(
        worker_env: WorkerEnv) -> None:
    """`python -m examples.faust_embedding` runs Touchflow's worker and the user's CRM agent in
    one Faust app: a complaint call gives an `apology_call` action (Touchflow's), which the
    user's agent turns into one CRM ticket carrying the action's id; an email action is not
    forwarded; SIGTERM stops both with exit code 0."""
    worker = worker_env.start_worker("embed", module="examples.faust_embedding")
    worker_env.wait_ready(worker, timeout=90)
    pings = [log_line(f"e{i}", "c-mail", "ping", at=f"2026-03-02T09:{i:02d}:00Z")
             for i in range(10)]
    call = log_line("call-1", "c-call", "call", minute=30, channel="call_center",
                    reason="complaint")
    await produce(worker_env.broker.bootstrap, worker_env.topic("events"), [*pings, call])
    actions = await wait_for_records(worker_env, "actions", lambda rs: len(rs) >= 2)
    tickets = await wait_for_records(worker_env, "crm.tickets", lambda rs: len(rs) >= 1)
    apology = [a for a in actions if a["action"] == "apology_call"]
    assert len(apology) == 1, worker_env.logs()[-3000:]
    assert [(t["ticket_id"], t["customer_id"], t["subject"]) for t in tickets] == [
        (apology[0]["action_id"], "c-call", "apology_call")]
    assert orjson.dumps(tickets[0]["reasons"]) == orjson.dumps(apology[0]["reasons"])
    assert worker_env.stop(worker) == 0
