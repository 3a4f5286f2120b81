"""Touchflow: a streaming next-best-action service: a pure decision core driven by a Kafka
worker (a lean aiokafka loop, or the same loop inside a Faust app), per-customer state in a
local RocksDB store backed by a changelog topic (no Faust tables).

Rooms, lowest layer first; a room imports only from the rooms before it
(tests/unit/test_layers.py):

- `schemas` (top-level package): the wire contract, its vocabulary and codecs.
- `service.domain`: the pure decision core (no I/O, no clock, no globals).
- `service.ops`: settings, logs, metrics, health.
- `service.stream`: the worker (runtimes, processor, store, recovery, sinks, shells).
- `service.replay`: replaying logs through the same per-event step.
- `service.tools`: simulator, dev stack, report, cases, profile access.
- `service.cli`: the `touchflow` command line, the one door to all of them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
