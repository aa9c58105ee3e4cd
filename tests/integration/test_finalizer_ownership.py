"""Every object that owns a remote sync holds the operator's finalizer, however it came to own
it, on a cluster without the chart's admission policy (every cluster before Kubernetes 1.36,
`admissionPolicy.enabled=false`, `make demo`): real kube-apiserver, the emulator over
loopback, the operator through `mixpeek-operator run`."""

from __future__ import annotations

import json

import pytest

from hack.localcluster import ControlPlane
from mixpeek_operator.constants import FINALIZER
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    mixpeek_api,
    sync_id,
    wait_admission,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crd_installed", "credentials")


def finalizers(objects: Objects, name: str) -> list[str]:
    obj = objects.get(name)
    assert obj is not None
    found: list[str] = obj["metadata"].get("finalizers") or []
    return found


def test_an_adopted_sync_keeps_its_finalizer_and_is_deleted_with_its_object(
    cluster: ControlPlane, objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    wait_admission(cluster, objects.namespace, finalizer_added=False)  # no admission policy here
    with mixpeek_api(mixpeek.url, EMULATOR_API_KEY) as api:
        made = api.post(
            "/v1/buckets/bkt_demo/syncs",
            json={"connection_id": "conn_s3_demo", "source_path": "demo-bucket/videos"},
        )
        made.raise_for_status()
        existing = made.json()["sync_config_id"]
        start_operator(objects.namespace)

        objects.create(bucketsync("adopter", syncConfigId=existing, deletionPolicy="Delete"))
        assert sync_id(objects.wait_ready("adopter")) == existing
        assert finalizers(objects, "adopter") == [FINALIZER]

        # Someone strips it (a cleanup script, `kubectl patch`): the operator puts it back.
        objects.kubectl(
            "patch",
            "bucketsync/adopter",
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
        )
        wait_for(lambda: finalizers(objects, "adopter") == [FINALIZER], 15, what="finalizer restored")

        objects.delete("adopter")
        wait_for(lambda: objects.get("adopter") is None, what="object deleted")
        assert api.get(f"/v1/buckets/bkt_demo/syncs/{existing}").status_code == 404  # not leaked
