"""`python -m examples.faust_embedding`: Touchflow's worker (Faust runtime) with the CRM
forwarding agent of crm.py in the same Faust app; settings from `TOUCHFLOW_*` as for
`touchflow worker`, SIGTERM drains and stops both."""

from __future__ import annotations

from examples.faust_embedding.crm import add_crm_forwarder
from service.stream.worker import run_embedded


def main() -> int:
    return run_embedded("faust_embedding", runtime="faust", customize=add_crm_forwarder)


if __name__ == "__main__":
    raise SystemExit(main())
