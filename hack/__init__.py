"""Development tooling: the local control plane and node, Go builds, the image, the benchmarks.

A package, run from the repository root as `python -m hack.<module>` (the Makefile does); the
tests import it the same way (`from hack.localcluster import ControlPlane`).
"""
