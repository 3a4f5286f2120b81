"""`python -m examples.file_output`: Touchflow's worker with its actions (and their
per-channel copies) appended to JSON-lines files instead of the Kafka actions topics, through
the sink seam (service/stream/sink.py); settings from `TOUCHFLOW_*` as for `touchflow
worker`, the files in `<TOUCHFLOW_DATA_DIR>/outputs/`."""

from __future__ import annotations

import sys

from examples.file_output.outputs import actions_to_files
from service.ops.logs import configure_logging
from service.ops.settings import SettingsError, load_settings
from service.stream.worker import StartupError, run_worker


def main() -> int:
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return run_worker(settings, sink_factory=actions_to_files)
    except (SettingsError, StartupError) as error:
        print(f"file_output: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
