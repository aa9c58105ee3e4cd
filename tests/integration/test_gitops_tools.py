"""How the GitOps tools judge live BucketSyncs, asked of the tools' own code.

Objects are driven into each state of the table in docs/gitops.md against the real API
server and operator; then Argo CD's health code (hack/argocd-health, with the shipped
argocd-cm.yaml), both kstatus libraries (hack/kstatus: sigs.k8s.io/cli-utils and the
fluxcd fork that Flux and Helm 4 link), `kubectl wait` and `helm install --wait` (the real
binaries) give their answers, which must be the documented ones.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from hack.gotools import argocd_health, kstatus
from hack.k8sbuild import build_helm
from hack.localcluster import ControlPlane
from mixpeek_operator.constants import RECONCILE_PAUSED
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    WRONG_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    has_condition,
    make_secret,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crd_installed")

REPO_ROOT = Path(__file__).resolve().parents[2]
ARGOCD_CM = REPO_ROOT / "docs" / "argocd" / "argocd-cm.yaml"
APP_CHART = Path(__file__).parent / "charts" / "bucketsync-app"

# state -> (kstatus, Argo CD), as docs/gitops.md documents them.
EXPECTED = {
    "new": ("InProgress", "Progressing"),
    "Ready": ("Current", "Healthy"),
    "edited": ("InProgress", "Progressing"),
    "Stalled": ("Failed", "Degraded"),
    "paused": ("Current", "Suspended"),
    "reconcile-paused": ("Current", "Suspended"),
    "deleting": ("Terminating", "Progressing"),
}


def kubectl_wait_returns(objects: Objects, name: str, seconds: int = 3) -> bool:
    result = objects.kubectl(
        "wait", "--for=condition=Ready", f"--timeout={seconds}s", f"bucketsync/{name}", check=False
    )
    return result.returncode == 0


def test_each_state_as_argo_cd_kstatus_and_kubectl_see_it(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    api_client: k8s.ApiClient,
    start_operator: OperatorFactory,
) -> None:
    snapshots: dict[str, dict[str, Any]] = {}
    objects.create(bucketsync("subject"))
    objects.create(bucketsync("doomed"))
    snapshots["new"] = objects.get("subject") or {}  # no operator yet: only the CRD's default status

    operator = start_operator(objects.namespace)
    make_secret(api_client, objects.namespace, "wrong", api_key=WRONG_API_KEY, base_url=mixpeek.url)
    objects.create(bucketsync("stalled", credentialsRef={"name": "wrong"}))
    objects.create(bucketsync("paused", paused=True))
    objects.create(bucketsync("rpaused"))
    snapshots["Ready"] = objects.wait_ready("subject")
    snapshots["Stalled"] = objects.wait_stalled("stalled", "AuthFailed")
    snapshots["paused"] = objects.wait_ready("paused")
    objects.wait_ready("rpaused")
    objects.wait_ready("doomed")
    objects.annotate("rpaused", **{RECONCILE_PAUSED: "true"})
    snapshots["reconcile-paused"] = wait_for(
        lambda: (obj := objects.get("rpaused")) and has_condition(obj, "ReconcilePaused", "True") and obj,
        30,
        what="ReconcilePaused=True",
    )
    waits = {
        "Ready": kubectl_wait_returns(objects, "subject"),
        "Stalled": kubectl_wait_returns(objects, "stalled"),
        "paused": kubectl_wait_returns(objects, "paused"),
    }

    operator.stop()  # freeze the next two states: nobody handles them
    objects.patch("subject", {"spec": {"pollingIntervalSeconds": 900}})
    snapshots["edited"] = objects.get("subject") or {}
    waits["edited"] = kubectl_wait_returns(objects, "subject")
    objects.delete("doomed")
    snapshots["deleting"] = objects.get("doomed") or {}

    states = list(EXPECTED)
    bodies = [snapshots[state] for state in states]
    argocd = argocd_health(bodies, ARGOCD_CM)
    computed = kstatus(bodies)
    rows = {
        state: (ks["sigs"]["status"], ks["fluxcd"]["status"], argo["status"], argo.get("message", ""))
        for state, ks, argo in zip(states, computed, argocd, strict=True)
    }
    print("\nstate | kstatus (sigs) | kstatus (fluxcd) | Argo CD | Argo CD message | kubectl wait")
    for state, (sigs, flux, argo, message) in rows.items():
        wait = {True: "returns", False: "waits"}.get(waits.get(state), "-")  # type: ignore[arg-type]
        print(f"{state} | {sigs} | {flux} | {argo} | {message} | {wait}")

    assert {state: (sigs, argo) for state, (sigs, _, argo, _) in rows.items()} == EXPECTED
    assert all(sigs == flux for sigs, flux, _, _ in rows.values())
    assert not any("error" in argo for argo in argocd)
    assert rows["deleting"][3] == "Pending deletion"  # Argo CD's own answer, before any script
    # kubectl 1.36 skips a Ready condition whose observedGeneration is older than the object.
    assert waits == {"Ready": True, "Stalled": False, "paused": True, "edited": False}


def helm_install(
    cluster: ControlPlane, namespace: str, api_key: str, base_url: str, timeout: str
) -> tuple[subprocess.CompletedProcess[str], float, str]:
    release = f"app-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    result = subprocess.run(
        [
            str(build_helm() / "helm"), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
            "install", release, str(APP_CHART), "--wait", "--timeout", timeout,
            "--set", f"apiKey={api_key},baseUrl={base_url}",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    return result, time.monotonic() - started, release


def test_helm_install_wait_returns_once_ready(
    objects: Objects, mixpeek: EmulatorProcess, cluster: ControlPlane, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    result, seconds, release = helm_install(cluster, objects.namespace, EMULATOR_API_KEY, mixpeek.url, "90s")
    print(f"\nhelm install --wait, operator running: exit {result.returncode} after {seconds:.1f}s")
    assert result.returncode == 0, result.stderr
    obj = objects.get(release)
    assert has_condition(obj, "Ready", "True")  # not before: kstatus waited for it
    assert (obj or {})["status"]["observedGeneration"] == (obj or {})["metadata"]["generation"]


def test_helm_install_wait_fails_fast_on_a_wrong_key(
    objects: Objects, mixpeek: EmulatorProcess, cluster: ControlPlane, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    result, seconds, _ = helm_install(cluster, objects.namespace, WRONG_API_KEY, mixpeek.url, "120s")
    print(f"\nhelm install --wait, wrong key: exit {result.returncode} after {seconds:.1f}s")
    assert result.returncode != 0
    assert "status: Failed" in result.stderr
    assert seconds < 60, "Stalled is kstatus Failed: Helm must not wait for its timeout"
    assert WRONG_API_KEY not in result.stderr + result.stdout


def test_helm_install_wait_times_out_without_an_operator(
    objects: Objects, mixpeek: EmulatorProcess, cluster: ControlPlane
) -> None:
    result, seconds, _ = helm_install(cluster, objects.namespace, EMULATOR_API_KEY, mixpeek.url, "8s")
    print(f"\nhelm install --wait, no operator: exit {result.returncode} after {seconds:.1f}s")
    assert result.returncode != 0
    assert seconds >= 8
    assert "InProgress" in result.stderr or "context deadline exceeded" in result.stderr


def test_kubectl_explain_describes_fields_and_recursive_lists_names_and_types(objects: Objects) -> None:
    """What docs/resource.md and docs/reference.md promise of `kubectl explain`, with the real kubectl."""
    field = objects.kubectl("explain", "bucketsync.spec.pollingIntervalSeconds").stdout
    level = objects.kubectl("explain", "bucketsync.spec").stdout
    recursive = objects.kubectl("explain", "bucketsync.spec", "--recursive").stdout
    description = "Seconds between polls in continuous mode."
    assert "DESCRIPTION:" in field
    assert description in field
    assert description in level  # one level: each field with its description
    fields = recursive.split("FIELDS:", 1)[1]
    assert "pollingIntervalSeconds\t<integer>" in fields
    assert description not in fields  # --recursive: names and types only
