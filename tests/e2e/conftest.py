"""The e2e tier: a real node (hack/localnode.py) running the image built here (hack/image.py).

Needs Linux and root. Elsewhere the tier is skipped with the reason; under CI=true (CI runs
as root on Linux) a missing requirement fails the run instead, so it can never silently skip.
The node is started once per session, and the session fails if its tear-down leaves any
process, namespace, interface, mount, cgroup, iptables chain or state directory behind. It
starts from a fresh machine's state, with no /run/netns (a machine that never ran
`ip netns add`), so the check covers what the node itself creates there.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack import image, localnode
from hack.k8sbuild import build_helm
from tests.support.node_support import Node, require_node

# Scenarios that leave the cluster as they found it (their objects, release, namespaces and
# the CRD deleted) run first, so each `helm install` creates the CRD and its admission policy
# afresh (and an apply right after it meets a new CRD); test_chart_on_node keeps its objects
# (its last test checks that an uninstall leaves them) and runs last.
SCENARIO_ORDER = ("test_quickstart_on_node.py", "test_chart_ha_on_node.py", "test_chart_on_node.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SCENARIO_ORDER.index(name) if name in SCENARIO_ORDER else len(SCENARIO_ORDER)

    slots = [index for index, item in enumerate(items) if item.path.parent == Path(__file__).parent]
    ordered = sorted((items[index] for index in slots), key=rank)
    for index, item in zip(slots, ordered, strict=True):
        items[index] = item


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
    with without_netns_dir():
        with localnode.running_node(workdir) as running:
            timings["node-ready"] = time.monotonic() - began
            # The node imports the archive at start; again here in case it started from an older one.
            localnode.import_image(workdir / "containerd" / "containerd.sock", archive)
            yield Node(running=running, image=image.IMAGE, timings=timings)
            layout = running.layout
        left = localnode.leftovers(layout)
        assert not left, f"the node left things behind: {left}"
    print(f"\ne2e timings (s): { {k: round(v, 1) for k, v in timings.items()} }")


@contextlib.contextmanager
def without_netns_dir() -> Iterator[None]:
    """No /run/netns while the node runs and is checked, as on a machine that never ran
    `ip netns add`; put back afterwards as that command makes it (a shared bind mount on
    itself). One holding anybody's namespace is left alone (the node then starts beside it)."""
    netns = localnode.NETNS_DIR
    if not netns.is_dir() or os.listdir(netns):
        yield
        return
    was_mount = localnode.is_mount_point(netns)
    while localnode.is_mount_point(netns):
        subprocess.run(["umount", str(netns)], check=True)
    netns.rmdir()
    try:
        yield
    finally:
        netns.mkdir(exist_ok=True)
        if was_mount and not localnode.is_mount_point(netns):
            subprocess.run(["mount", "--bind", str(netns), str(netns)], check=True)
            subprocess.run(["mount", "--make-rshared", str(netns)], check=True)
