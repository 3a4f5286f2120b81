"""The streaming worker: the two runtimes (the lean aiokafka loop and the Faust app), the batch
processor that drives the per-event step, the store, its changelog recovery and fencing, the
sinks, and the shells around the pure core (identity control, signal feed, context reader,
dead letters).

May import `schemas`, `service.domain` and `service.ops`; never `service.replay`,
`service.tools` or the command line (tests/unit/test_layers.py keeps it so).
"""
