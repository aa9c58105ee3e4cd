"""The cache transform: a BucketSync as the API server sends it, and what the cache keeps."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
from typing import Any

from mixpeek_operator import constants, reconcile
from mixpeek_operator.constants import FINALIZER, RECONCILE_PAUSED, TRIGGER_REQUESTED_AT
from mixpeek_operator.leancache import READ_ANNOTATIONS, lean_body
from mixpeek_operator.reconcile import ObjectState

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SPEC = {"bucketId": "bkt_demo", "connectionId": "conn_s3", "sourcePath": "demo/videos", "batchSize": 50}
STATUS = {
    "observedGeneration": 2,
    "syncConfigId": "sync_1",
    "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "ok"}],
    "metrics": {"filesSynced": 3},
}


def served_body(**annotations: str) -> dict[str, Any]:
    """What a watch event carries: managedFields, last-applied, labels, other tools' annotations."""
    manifest = {"apiVersion": "mixpeek.com/v1alpha1", "kind": "BucketSync", "spec": SPEC}
    return {
        "apiVersion": "mixpeek.com/v1alpha1",
        "kind": "BucketSync",
        "metadata": {
            "name": "demo",
            "namespace": "team",
            "uid": "uid-1",
            "resourceVersion": "4711",
            "generation": 2,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [FINALIZER],
            "labels": {"app.kubernetes.io/part-of": "media", "argocd.argoproj.io/instance": "media"},
            "annotations": {
                LAST_APPLIED: json.dumps(manifest),
                "argocd.argoproj.io/tracking-id": "media:mixpeek.com/BucketSync:team/demo",
                **annotations,
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}],
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Update",
                    "apiVersion": "mixpeek.com/v1alpha1",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {f"f:{key}": {} for key in SPEC}},
                }
                for manager in ("kubectl-client-side-apply", "mixpeek-operator", "argocd-controller")
            ],
        },
        "spec": SPEC,
        "status": STATUS,
    }


def test_keeps_only_what_the_operator_reads() -> None:
    lean = lean_body(served_body(**{TRIGGER_REQUESTED_AT: "t1"}))
    assert lean == {
        "metadata": {
            "name": "demo",
            "namespace": "team",
            "uid": "uid-1",
            "resourceVersion": "4711",
            "generation": 2,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [FINALIZER],
            "annotations": {TRIGGER_REQUESTED_AT: "t1"},
        },
        "spec": SPEC,
        "status": STATUS,
    }


def test_the_reconcile_sees_the_same_object() -> None:
    for extra in ({}, {RECONCILE_PAUSED: "true", TRIGGER_REQUESTED_AT: "t2"}):
        body = served_body(**extra)
        full = ObjectState.from_body(body)
        read = {name: value for name, value in full.annotations.items() if name in READ_ANNOTATIONS}
        assert ObjectState.from_body(lean_body(body)) == dataclasses.replace(full, annotations=read)


def test_every_annotation_the_reconcile_reads_is_kept() -> None:
    source = inspect.getsource(reconcile)
    read = set(re.findall(r"annotations\.get\(([A-Z_]+)", source))
    assert read  # the pattern still finds the reads
    assert {getattr(constants, name) for name in read} <= set(READ_ANNOTATIONS)


def test_deletion_is_kept_and_no_annotation_block_is_invented() -> None:
    body = served_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    lean = lean_body(body)
    assert lean["metadata"]["deletionTimestamp"] == "2026-01-02T00:00:00Z"
    assert "annotations" not in lean["metadata"]
    assert ObjectState.from_body(lean).deleting


def test_the_served_body_is_left_alone() -> None:
    body = served_body()
    before = copy.deepcopy(body)
    lean_body(body)
    assert body == before


def test_a_fraction_of_the_served_size() -> None:
    body = served_body()
    # managedFields and last-applied are the bulk of what the API server sends.
    assert len(json.dumps(lean_body(body))) < len(json.dumps(body)) / 2


def test_keys_are_shared_between_objects() -> None:
    def parsed() -> dict[str, Any]:  # as from the wire: every key a new string
        loaded: dict[str, Any] = json.loads(json.dumps(served_body()))
        return loaded

    plain = [lean_body(parsed(), intern_keys=False) for _ in range(2)]
    assert next(iter(plain[0]["status"])) is not next(iter(plain[1]["status"]))
    first, second = lean_body(parsed()), lean_body(parsed())
    assert first == second == plain[0]
    for one, other in ((first["status"], second["status"]), (first["spec"], second["spec"])):
        for key_one, key_other in zip(one, other, strict=True):
            assert key_one is key_other
    condition_keys = [list(lean["status"]["conditions"][0]) for lean in (first, second)]
    assert all(a is b for a, b in zip(*condition_keys, strict=True))
