"""`python -m examples.faust_embedding`: Touchflow's worker (Faust runtime) with the CRM
forwarding agent of crm.py in the same Faust app; settings from `TOUCHFLOW_*` as for
`touchflow worker`, SIGTERM drains and stops both."""

from __future__ import annotations

import sys

from examples.faust_embedding.crm import add_crm_forwarder
from service.ops.logs import configure_logging
from service.ops.settings import SettingsError, load_settings
from service.stream.worker import StartupError, run_worker


def main() -> int:
    try:
        settings = load_settings(runtime="faust")
        configure_logging(settings.log_level, settings.log_format)
        return run_worker(settings, customize=add_crm_forwarder)
    except (SettingsError, StartupError) as error:
        print(f"faust_embedding: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
