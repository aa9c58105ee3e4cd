"""The chart's MutatingAdmissionPolicy in the benchmark's control plane, as users get it.

Rendered by the real helm binary with `--validate` against the running API server (so the
chart's `Capabilities.APIVersions` guard sees what the cluster serves) and bound to the
operator's namespaces only, like the chart does in namespace mode.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from hack.bench.kube import Kube, bucketsyncs_path
from hack.k8sbuild import build_helm
from hack.localcluster import REPO_ROOT, ControlPlane
from mixpeek_operator.constants import FINALIZER

CHART = REPO_ROOT / "charts" / "mixpeek-operator"
TEMPLATE = "templates/admissionpolicy.yaml"


def install(plane: ControlPlane, namespaces: list[str], workdir: Path) -> str:
    """Apply the chart's policy and binding for `namespaces`; returns the rendered YAML."""
    values = workdir / "admission-policy-values.json"
    values.write_text(json.dumps({"watchNamespaces": namespaces}))
    helm = build_helm() / "helm"
    command = [
        str(helm),
        "template",
        "bench",
        str(CHART),
        "-n",
        "bench-system",
        "-f",
        str(values),
        "--validate",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--show-only",
        TEMPLATE,
    ]
    rendered = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if rendered.returncode != 0 or "MutatingAdmissionPolicyBinding" not in rendered.stdout:
        raise RuntimeError(f"helm did not render the admission policy:\n{rendered.stderr}{rendered.stdout}")
    plane.kubectl("apply", "-f", "-", input=rendered.stdout)
    return rendered.stdout


async def wait_in_effect(kube: Kube, namespace: str, within: float = 60.0) -> float:
    """Until a dry-run create in `namespace` comes back with the finalizer; returns seconds waited."""
    probe = {
        "apiVersion": "mixpeek.com/v1alpha1",
        "kind": "BucketSync",
        "metadata": {"name": "policy-probe"},
        "spec": {"bucketId": "bkt_probe", "connectionId": "conn_probe", "sourcePath": "probe"},
    }
    began = time.monotonic()
    while time.monotonic() - began < within:
        # 503 while the policy plugin has not loaded the new CRD's schema (it polls every 5 s)
        created = await kube.call(
            "POST", bucketsyncs_path(namespace), probe, params={"dryRun": "All"}, ok=(503,)
        )
        if FINALIZER in (created["metadata"].get("finalizers") or []):
            return time.monotonic() - began
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the admission policy was not in effect in {namespace} after {within:.0f}s")
