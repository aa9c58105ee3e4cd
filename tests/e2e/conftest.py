"""The e2e tier: a real node (hack/localnode.py) running the image built here (hack/image.py).

Needs Linux and root. Elsewhere the tier is skipped with the reason; under CI=true (CI runs
as root on Linux) a missing requirement fails the run instead, so it can never silently skip.
The node is started once per session, and the session fails if its tear-down leaves any
process, namespace, interface, mount, cgroup, iptables chain or state directory behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from node_support import Node, require_node

import image
import localnode
from k8sbuild import build_helm


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    require_node()
    timings: dict[str, float] = {}
    began = time.monotonic()
    localnode.build_all()
    build_helm()
    timings["binaries"] = time.monotonic() - began
    began = time.monotonic()
    archive = image.build_operator_image()
    timings["image"] = time.monotonic() - began
    workdir = tmp_path_factory.mktemp("node")
    began = time.monotonic()
    with localnode.running_node(workdir) as running:
        timings["node-ready"] = time.monotonic() - began
        # The node imports the archive at start; again here in case it started from an older one.
        image.import_into(workdir / "containerd" / "containerd.sock", archive)
        yield Node(running=running, image=image.IMAGE, timings=timings)
        layout = running.layout
    left = localnode.leftovers(layout)
    assert not left, f"the node left things behind: {left}"
    print(f"\ne2e timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
