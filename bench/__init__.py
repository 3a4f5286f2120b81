"""Reproducible benchmarks: `python -m bench` (or `make bench`) prints one table.

The same seeded workload (service.tools.workload.event_log) goes, on one embedded broker, through a
naive Faust app, the touchflow worker, and a raw aiokafka loop (the ceiling); plus the pure
decision core in-process when bench/bench_decide.py is present.
"""
