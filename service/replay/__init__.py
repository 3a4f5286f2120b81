"""Offline replay of event logs through the production decision logic (the same per-event step
as the worker). May import `schemas`, `service.domain`, `service.ops` and `service.stream`.

Library API (imported lazily, so `touchflow --help` stays fast):

- `replay_events(events, rulebook, context)` -> iterator of `ReplayStep` (event, outcome, error)
- `replay_file(path, rulebook, context=..., output=..., audit=...)` -> `ReplayResult`
- `compare_stream(events, rulebook_a, rulebook_b)` -> `Comparison` (decision-by-decision diff)
- `write_report(path, results, comparison=...)` -> a self-contained HTML report
- `LogFile`, `decode_lines`, `load_context` read logs; `TopicSource` reads a topic's time range
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BadRecord",
    "Comparison",
    "LogFile",
    "ReplayResult",
    "ReplayStep",
    "Replayer",
    "TopicSource",
    "compare_stream",
    "decode_lines",
    "load_context",
    "replay_events",
    "replay_file",
    "write_report",
]

_WHERE = {
    "BadRecord": "reader",
    "LogFile": "reader",
    "decode_lines": "reader",
    "load_context": "reader",
    "ReplayResult": "runner",
    "ReplayStep": "runner",
    "Replayer": "replayer",
    "replay_events": "runner",
    "replay_file": "runner",
    "Comparison": "diff",
    "compare_stream": "diff",
    "write_report": "report",
    "TopicSource": "topic",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'service.replay' has no attribute {name!r}")
    return getattr(importlib.import_module(f"service.replay.{module}"), name)
