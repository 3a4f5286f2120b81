"""What an operator sets and watches: settings, logging, Prometheus metrics, health and
readiness, the GC policy and the retry policy shared by the runtimes and replay.

May import `schemas` and `service.domain` only (tests/unit/test_layers.py keeps it so).
"""
