"""`make bench` / `make bench-quick`: how the operator scales, measured against the floor.

`python -m hack.bench` (__main__.py) is the entry point; this package holds its parts:

- stats.py      pure helpers (percentiles, ratios, metric parsing, the Markdown table); unit-tested
- kube.py       a small async Kubernetes client for the driver (admin client certificate), with a watch
- procs.py      the emulator, the operator and py-spy as child processes; CPU and RSS sampling
- scenarios.py  the five scenarios and the floor
- main.py       command line, orchestration, JSON result and table
"""
