"""`python -m examples.file_output`: Touchflow's worker with its actions (and their
per-channel copies) appended to JSON-lines files instead of the Kafka actions topics, through
the sink seam (service/stream/sink.py); settings from `TOUCHFLOW_*` as for `touchflow
worker`, the files in `<TOUCHFLOW_DATA_DIR>/outputs/`."""

from __future__ import annotations

from examples.file_output.outputs import actions_to_files
from service.stream.worker import run_embedded


def main() -> int:
    return run_embedded("file_output", sink_factory=actions_to_files)


if __name__ == "__main__":
    raise SystemExit(main())
