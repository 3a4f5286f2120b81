"""Tools around the worker: the simulator and its workload, the learning simulation, the
`touchflow dev` stack with the embedded broker, the run report, persona cases
(`touchflow rules test`) and the right-of-access reader (`touchflow profile`).

May import anything in `service` except the command line (tests/unit/test_layers.py).
"""
