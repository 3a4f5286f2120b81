"""Setting defaults that code outside the worker needs without reading the environment.

`service.ops.settings` declares its fields with these values; replay uses them when no
TOUCHFLOW_* variable is set, without importing pydantic-settings (a sixth of its start-up).
"""

from __future__ import annotations

__all__ = ["ENV_PREFIX", "PARTITIONS", "TOMBSTONE_MARGIN_S"]

ENV_PREFIX = "TOUCHFLOW_"
PARTITIONS = 8  # partitions of the topics we create
TOMBSTONE_MARGIN_S = 7 * 86_400  # how long past max lateness an erasure tombstone is kept
