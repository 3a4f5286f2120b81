"""Touchflow: a streaming next-best-action service: a pure decision core driven by a Kafka
worker (a lean aiokafka loop, or the same loop inside a Faust app), per-customer state in a
local RocksDB store backed by a changelog topic (no Faust tables)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
