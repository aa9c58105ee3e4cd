"""The README's quickstart, verbatim, on the node: the shell blocks between the README's
`<!-- quickstart:begin -->` and `<!-- quickstart:end -->` markers, run by bash from the
repository root as a user copies them, with kubectl and helm on the PATH and KUBECONFIG set.

What differs from a user's cluster, and nothing else: the README's `REGISTRY` placeholder is
`localhost`, the registry of the image built here, which the node holds (tagged with the
chart's appVersion, as a push would) so that no pull is needed; the block for a Mixpeek
account (its `YOUR_API_KEY` placeholders) is skipped, the user without an account running
the emulator block next to it. The operator reaches the emulator by the Service DNS name the
README gives (the node's cluster DNS). The scenario runs first in the session
(tests/e2e/conftest.py), on a cluster without the CRD, and leaves none of it behind.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from hack.k8sbuild import build_helm, kube_bin_dir
from tests.support.node_support import REPO_ROOT, EmulatorService, Node
from tests.support.operator_support import is_ready, wait_for

BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
ACCOUNT_PLACEHOLDER = "YOUR_API_KEY"
REGISTRY = "localhost"
SYSTEM_NS, APP_NS, RELEASE = "mixpeek-system", "media", "mixpeek-operator"
EXAMPLE = REPO_ROOT / "examples" / "bucketsync-minimal.yaml"

pytestmark = pytest.mark.timeout(600)


def quickstart_blocks(readme: str) -> list[str]:
    """The ```sh blocks between the markers, dedented, in order."""
    assert (readme.count(BEGIN), readme.count(END)) == (1, 1), f"README.md needs one {BEGIN} … {END}"
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    blocks = []
    for found in re.finditer(r"^( *)```sh\n(.*?)^\1```", section, re.S | re.M):
        indent = len(found.group(1))
        blocks.append("".join(line[indent:] + "\n" for line in found.group(2).splitlines()))
    assert blocks, "no ```sh block between the quickstart markers"
    return blocks


def _chart_app_version() -> str:
    chart = yaml.safe_load((REPO_ROOT / "charts" / "mixpeek-operator" / "Chart.yaml").read_text())
    return str(chart["appVersion"])


def _tag_as_pushed(node: Node) -> None:
    """The image built here, also named as a push to `localhost` would name it."""
    socket = node.running.workdir / "containerd" / "containerd.sock"
    target = f"{REGISTRY}/mixpeek-operator:{_chart_app_version()}"
    ctr = ["ctr", f"--address={socket}", "-n", "k8s.io", "images"]
    subprocess.run([*ctr, "rm", target], capture_output=True, check=False)
    subprocess.run([*ctr, "tag", node.image, target], capture_output=True, check=True)


def _run_block(node: Node, block: str) -> str:
    env = dict(
        os.environ,
        KUBECONFIG=str(node.running.kubeconfig),
        PATH=f"{kube_bin_dir()}:{build_helm()}:{os.environ['PATH']}",
    )
    script = block.replace("REGISTRY/", f"{REGISTRY}/")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, (
        f"quickstart block failed:\n{script}\n{result.stdout}\n{result.stderr}\n{_diagnosis(node)}"
    )
    return result.stdout


def _diagnosis(node: Node) -> str:
    """What a user would look at next: pods, the object's conditions and Events, the logs."""
    looks = [
        ("get", "pods", "-A", "-o", "wide"),
        ("-n", APP_NS, "describe", "bucketsyncs"),
        ("-n", SYSTEM_NS, "logs", "deploy/mixpeek-operator", "--tail=40"),
        ("-n", SYSTEM_NS, "logs", "deploy/mixpeek-emulator", "--tail=40", "--previous"),
        ("-n", SYSTEM_NS, "describe", "pods", "-l", "app.kubernetes.io/name=mixpeek-emulator"),
        ("-n", SYSTEM_NS, "get", "endpoints"),
        ("-n", "kube-system", "get", "endpoints"),
    ]
    shown = []
    for look in looks:
        seen = node.kubectl(*look, check=False, timeout=30)
        shown.append(f"$ kubectl {' '.join(look)}\n{seen.stdout}{seen.stderr}")
    return "\n".join(shown)


@pytest.fixture
def quickstart_cleanup(node: Node) -> Iterator[None]:
    """Afterwards: the objects (their remote syncs deleted by the operator), the release, the
    namespaces and the CRD, so the next scenario installs the chart on a cluster without it."""
    yield
    node.kubectl("-n", APP_NS, "delete", "bucketsyncs", "--all", "--timeout=120s", check=False, timeout=150)
    # The operator releases the Secret's in-use finalizer once no object uses it.
    secret = ("-n", APP_NS, "get", "secret", "mixpeek-credentials")
    wait_for(
        lambda: not node.json(*secret)["metadata"].get("finalizers"),
        timeout=60,
        interval=0.5,
        what="the Secret's in-use finalizer released",
    )
    node.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout=120s")
    node.kubectl("delete", "namespace", APP_NS, SYSTEM_NS, "--timeout=180s", timeout=200)
    node.kubectl("delete", "crd", "bucketsyncs.mixpeek.com", "--timeout=60s", timeout=90)


def test_the_readme_quickstart_verbatim_with_service_dns(node: Node, quickstart_cleanup: None) -> None:
    blocks = quickstart_blocks((REPO_ROOT / "README.md").read_text())
    _tag_as_pushed(node)
    ran = [block for block in blocks if ACCOUNT_PLACEHOLDER not in block]
    assert len(ran) == len(blocks) - 1, "exactly one block is for a Mixpeek account"
    output = "".join(_run_block(node, block) for block in ran)
    # The last block listed the object, Ready (its `kubectl wait` passed).
    assert "demo-minimal" in output, output
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    obj = node.json("-n", APP_NS, "get", "bucketsync", name)
    assert is_ready(obj), obj.get("status")
    # The operator pod reached the emulator through cluster DNS, at the README's own address.
    secret = node.json("-n", APP_NS, "get", "secret", "mixpeek-credentials")
    assert ".svc:" in base64.b64decode(secret["data"]["baseUrl"]).decode()
    (remote,) = EmulatorService(node, SYSTEM_NS).syncs("?bucket_id=bkt_demo")
    assert obj["status"]["syncConfigId"] == remote["sync_config_id"]
