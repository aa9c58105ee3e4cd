"""The BucketSync CRD against a real kube-apiserver: what admission refuses, accepts and defaults.

Every refusal must name the offending field, so each invalid manifest states the field path
the API server's error has to carry.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.localcluster import ControlPlane
from mixpeek_operator import constants, crd
from mixpeek_operator.api.v1alpha1 import (
    USER_METADATA_MAX_KEYS,
    BucketSyncStatus,
    Condition,
    ConditionStatus,
    RemoteStatus,
    SyncMetrics,
)
from tests.support.operator_support import (
    ENDPOINTS,
    EmulatorProcess,
    OperatorFactory,
    endpoint_counts,
    is_ready,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("crd_installed")]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE: dict[str, Any] = {
    "bucketId": "bkt_demo",
    "connectionId": "conn_s3_demo",
    "sourcePath": "demo-bucket/videos",
}
MAPPING = "spec.schemaMapping.mappings[m]"


def manifest(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def with_mapping(entry: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, "schemaMapping": {"mappings": {"m": entry}}}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in BASE.items() if k != key}


# (id, spec, field path the error must name)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("batch-size-zero", {**BASE, "batchSize": 0}, "spec.batchSize"),
    ("batch-size-over-100", {**BASE, "batchSize": 101}, "spec.batchSize"),
    ("batch-size-not-integer", {**BASE, "batchSize": "fifty"}, "spec.batchSize"),
    ("polling-below-30", {**BASE, "pollingIntervalSeconds": 29}, "spec.pollingIntervalSeconds"),
    ("polling-above-900", {**BASE, "pollingIntervalSeconds": 901}, "spec.pollingIntervalSeconds"),
    ("sync-mode-enum", {**BASE, "syncMode": "scheduled"}, "spec.syncMode"),
    ("paused-not-bool", {**BASE, "paused": "yes"}, "spec.paused"),
    ("deletion-policy-enum", {**BASE, "deletionPolicy": "Keep"}, "spec.deletionPolicy"),
    ("management-policy-enum", {**BASE, "managementPolicy": "NoDelete"}, "spec.managementPolicy"),
    ("replacement-policy-enum", {**BASE, "replacementPolicy": "Replace"}, "spec.replacementPolicy"),
    ("bucket-id-missing", without("bucketId"), "spec.bucketId"),
    ("connection-id-missing", without("connectionId"), "spec.connectionId"),
    ("bucket-id-empty", {**BASE, "bucketId": ""}, "spec.bucketId"),
    ("source-path-too-long", {**BASE, "sourcePath": "p" * 1025}, "spec.sourcePath"),
    ("sync-config-id-too-long", {**BASE, "syncConfigId": "s" * 257}, "spec.syncConfigId"),
    ("metadata-reserved-key", {**BASE, "metadata": {"mixpeek-operator.uid": "x"}}, "spec.metadata"),
    (
        "metadata-too-many-keys",
        {**BASE, "metadata": {f"k{i}": "v" for i in range(USER_METADATA_MAX_KEYS + 1)}},
        "spec.metadata",
    ),
    ("metadata-value-not-string", {**BASE, "metadata": {"tier": 1}}, "spec.metadata.tier"),
    (
        "credentials-cross-namespace",
        {**BASE, "credentialsRef": {"name": "s", "namespace": "other"}},
        "spec.credentialsRef.namespace",
    ),
    ("credentials-name-missing", {**BASE, "credentialsRef": {}}, "spec.credentialsRef.name"),
    (
        "credentials-name-not-dns",
        {**BASE, "credentialsRef": {"name": "My_Secret"}},
        "spec.credentialsRef.name",
    ),
    ("observe-only-without-sync-id", {**BASE, "managementPolicy": "ObserveOnly"}, "spec.syncConfigId"),
    (
        "filters-min-above-max",
        {**BASE, "fileFilters": {"minSizeBytes": 10, "maxSizeBytes": 9}},
        "spec.fileFilters.minSizeBytes",
    ),
    ("filters-negative-size", {**BASE, "fileFilters": {"maxSizeBytes": -1}}, "spec.fileFilters.maxSizeBytes"),
    (
        "filters-after-not-before",
        {
            **BASE,
            "fileFilters": {
                "modifiedAfter": "2025-02-01T00:00:00Z",
                "modifiedBefore": "2025-01-01T00:00:00Z",
            },
        },
        "spec.fileFilters.modifiedAfter",
    ),
    (
        "filters-bad-timestamp",
        {**BASE, "fileFilters": {"modifiedBefore": "yesterday"}},
        "spec.fileFilters.modifiedBefore",
    ),
    (
        "filters-too-many-patterns",
        {**BASE, "fileFilters": {"includePatterns": ["*"] * 101}},
        "spec.fileFilters.includePatterns",
    ),
    (
        "filters-unknown-field",
        {**BASE, "fileFilters": {"extensions": [".mp4"]}},
        "spec.fileFilters.extensions",
    ),
    ("spec-unknown-field", {**BASE, "bucket": "bkt_demo"}, "spec.bucket"),
    ("mapping-without-mappings", {**BASE, "schemaMapping": {}}, "spec.schemaMapping.mappings"),
    (
        "mapping-too-many-entries",
        {
            **BASE,
            "schemaMapping": {
                "mappings": {f"f{i}": {"source": {"type": "file"}, "targetType": "blob"} for i in range(101)}
            },
        },
        "spec.schemaMapping.mappings",
    ),
    ("mapping-source-missing", with_mapping({"targetType": "field"}), f"{MAPPING}.source"),
    ("mapping-source-type-enum", with_mapping({"source": {"type": "url"}}), f"{MAPPING}.source.type"),
    (
        "mapping-target-type-enum",
        with_mapping({"targetType": "column", "source": {"type": "file"}}),
        f"{MAPPING}.targetType",
    ),
    ("mapping-tag-without-key", with_mapping({"source": {"type": "tag"}}), f"{MAPPING}.source.key"),
    (
        "mapping-tag-key-too-long",
        with_mapping({"source": {"type": "tag", "key": "k" * 129}}),
        f"{MAPPING}.source.key",
    ),
    (
        "mapping-metadata-key-too-long",
        with_mapping({"source": {"type": "metadata", "key": "k" * 1025}}),
        f"{MAPPING}.source.key",
    ),
    (
        "mapping-drive-property-without-key",
        with_mapping({"source": {"type": "drive_property"}}),
        f"{MAPPING}.source.key",
    ),
    (
        "mapping-key-on-file-source",
        with_mapping({"targetType": "blob", "source": {"type": "file", "key": "k"}}),
        f"{MAPPING}.source.key",
    ),
    (
        "mapping-regex-without-pattern",
        with_mapping({"source": {"type": "filename_regex"}}),
        f"{MAPPING}.source.pattern",
    ),
    (
        "mapping-default-without-regex",
        with_mapping({"source": {"type": "tag", "key": "k", "default": "x"}}),
        f"{MAPPING}.source.default",
    ),
    ("mapping-column-without-name", with_mapping({"source": {"type": "column"}}), f"{MAPPING}.source.name"),
    (
        "mapping-segment-on-tag",
        with_mapping({"source": {"type": "tag", "key": "k", "segment": 1}}),
        f"{MAPPING}.source.segment",
    ),
    ("mapping-file-source-on-field", with_mapping({"source": {"type": "file"}}), f"{MAPPING}.source.type"),
    (
        "mapping-transform-on-blob",
        with_mapping({"targetType": "blob", "source": {"type": "file"}, "transform": "trim"}),
        f"{MAPPING}.transform",
    ),
    (
        "mapping-required-on-blob",
        with_mapping({"targetType": "blob", "source": {"type": "file"}, "required": True}),
        f"{MAPPING}.required",
    ),
    (
        "mapping-blob-type-on-field",
        with_mapping({"source": {"type": "column", "name": "c"}, "blobType": "image"}),
        f"{MAPPING}.blobType",
    ),
    (
        "mapping-blob-property-on-field",
        with_mapping({"source": {"type": "column", "name": "c"}, "blobProperty": "x"}),
        f"{MAPPING}.blobProperty",
    ),
    (
        "mapping-blob-type-enum",
        with_mapping({"targetType": "blob", "source": {"type": "file"}, "blobType": "document"}),
        f"{MAPPING}.blobType",
    ),
    (
        "mapping-transform-enum",
        with_mapping({"source": {"type": "column", "name": "c"}, "transform": "titlecase"}),
        f"{MAPPING}.transform",
    ),
    (
        "mapping-blob-property-empty",
        with_mapping({"targetType": "blob", "source": {"type": "file"}, "blobProperty": ""}),
        f"{MAPPING}.blobProperty",
    ),
    (
        "mapping-mime-override-malformed",
        with_mapping({"targetType": "blob", "source": {"type": "file"}, "mimeTypeOverride": "video"}),
        f"{MAPPING}.mimeTypeOverride",
    ),
]


@pytest.fixture
def kubectl(cluster: ControlPlane, namespace: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl in the test's namespace, never raising: tests look at the result."""

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl("-n", namespace, *args, input=input, check=False)

    return run


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def create(kubectl: Kubectl, name: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("create", "-f", "-", input=manifest(name, spec))


def get(kubectl: Kubectl, name: str) -> dict[str, Any]:
    result = kubectl("get", f"{constants.PLURAL}/{name}", "-o", "json")
    assert result.returncode == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def patch_spec(kubectl: Kubectl, name: str, spec_patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "patch", f"{constants.PLURAL}/{name}", "--type=merge", "-p", json.dumps({"spec": spec_patch})
    )


def refused_naming(result: subprocess.CompletedProcess[str], field_path: str) -> bool:
    """Refused, with `field_path` in the error; map keys may be spelled `[key]` (CEL) or `.key` (OpenAPI)."""
    pattern = re.sub(r"\\\[(\w+)\\\]", r"(?:\\[\1\\]|\\.\1)", re.escape(field_path))
    return result.returncode != 0 and re.search(pattern + r"[:\"]", result.stderr) is not None


@pytest.mark.parametrize(
    ("spec", "field_path"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_manifest_is_refused_naming_the_field(
    kubectl: Kubectl, spec: dict[str, Any], field_path: str
) -> None:
    result = create(kubectl, "invalid", spec)

    assert refused_naming(result, field_path), (
        f"expected a refusal naming {field_path}, got: {result.stderr or result.stdout}"
    )


def test_the_invalid_corpus_is_large_and_distinct() -> None:
    assert len(INVALID) >= 25
    assert len({case[0] for case in INVALID}) == len(INVALID)


def test_examples_are_accepted(kubectl: Kubectl) -> None:
    result = kubectl("apply", "-f", str(EXAMPLES))

    assert result.returncode == 0, result.stderr
    listed = kubectl("get", constants.SHORT_NAME, "-o", "name")
    assert sorted(listed.stdout.split()) == [
        f"{constants.SINGULAR}.{constants.GROUP}/{name}"
        for name in ("demo-minimal", "demo-videos", "media-backfill")
    ]


def test_valid_edge_values_are_accepted(kubectl: Kubectl) -> None:
    spec = {
        **BASE,
        "batchSize": 100,
        "pollingIntervalSeconds": 30,
        "metadata": {f"k{i}": "v" for i in range(USER_METADATA_MAX_KEYS)},
        "fileFilters": {"minSizeBytes": 5, "maxSizeBytes": 5},
        "managementPolicy": "ObserveOnly",
        "syncConfigId": "sync_existing",
        "schemaMapping": {
            "mappings": {
                "tag": {"source": {"type": "tag", "key": "k" * 128}},
                "meta": {
                    "targetType": "blob",
                    "source": {"type": "metadata", "key": "url"},
                    "blobType": "image",
                },
                "n": {"source": {"type": "constant", "value": 3}},
                "obj": {"source": {"type": "constant", "value": {"a": [1, "b"]}}},
                "title": {"source": {"type": "filename_regex", "pattern": "^(.*)$", "default": "x"}},
                "folder": {"source": {"type": "folder_path", "segment": -1, "fullPath": False}},
            }
        },
    }

    result = create(kubectl, "edges", spec)

    assert result.returncode == 0, result.stderr
    mappings = get(kubectl, "edges")["spec"]["schemaMapping"]["mappings"]
    assert mappings["obj"]["source"]["value"] == {"a": [1, "b"]}


def test_defaults_are_applied_and_new_objects_are_not_yet_observed(kubectl: Kubectl) -> None:
    assert create(kubectl, "defaults", BASE).returncode == 0

    body = get(kubectl, "defaults")

    assert body["spec"] == {
        **BASE,
        "syncMode": "continuous",
        "pollingIntervalSeconds": 300,
        "batchSize": 50,
        "skipBatchSubmission": False,
        "paused": False,
        "deletionPolicy": "Delete",
        "managementPolicy": "Full",
        "replacementPolicy": "Recreate",
    }
    assert body["status"] == {"observedGeneration": -1}


def test_mapping_entries_default_to_field_targets(kubectl: Kubectl) -> None:
    assert (
        create(kubectl, "mapped", with_mapping({"source": {"type": "column", "name": "c"}})).returncode == 0
    )

    assert get(kubectl, "mapped")["spec"]["schemaMapping"]["mappings"]["m"] == {
        "targetType": "field",
        "source": {"type": "column", "name": "c"},
    }


# --- transitions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec_patch",
    [{"syncConfigId": "sync_other"}, {"syncConfigId": None}],
    ids=["changed", "removed"],
)
def test_sync_config_id_cannot_change_or_be_removed(kubectl: Kubectl, spec_patch: dict[str, Any]) -> None:
    assert create(kubectl, "adopted", {**BASE, "syncConfigId": "sync_first"}).returncode == 0

    result = patch_spec(kubectl, "adopted", spec_patch)

    assert refused_naming(result, "spec.syncConfigId"), result.stderr
    assert "immutable" in result.stderr


def test_sync_config_id_cannot_be_added(kubectl: Kubectl) -> None:
    assert create(kubectl, "created", BASE).returncode == 0

    assert refused_naming(patch_spec(kubectl, "created", {"syncConfigId": "sync_late"}), "spec.syncConfigId")


CREATE_ONLY_EDITS: list[tuple[str, Any]] = [
    ("bucketId", "bkt_media"),
    ("connectionId", "conn_gdrive_demo"),
    ("sourcePath", "demo-bucket/other"),
    ("syncMode", "initial_only"),
    ("fileFilters", {"includePatterns": ["*.mov"]}),
    ("fileFilters", None),
    ("mixpeekNamespace", "other"),
    ("mixpeekNamespace", None),
]
CREATE_ONLY_IDS = [
    f"{field}-{'removed' if value is None else 'changed'}" for field, value in CREATE_ONLY_EDITS
]
FULL_SPEC: dict[str, Any] = {
    **BASE,
    "fileFilters": {"includePatterns": ["*.mp4"]},
    "mixpeekNamespace": "default",
}


@pytest.fixture
def rejecting(kubectl: Kubectl) -> str:
    assert create(kubectl, "rejecting", {**FULL_SPEC, "replacementPolicy": "Reject"}).returncode == 0
    return "rejecting"


@pytest.mark.parametrize(("field", "value"), CREATE_ONLY_EDITS, ids=CREATE_ONLY_IDS)
def test_reject_refuses_create_only_edits(kubectl: Kubectl, rejecting: str, field: str, value: Any) -> None:
    result = patch_spec(kubectl, rejecting, {field: value})

    assert refused_naming(result, f"spec.{field}"), result.stderr
    assert "replacementPolicy: Recreate" in result.stderr


@pytest.mark.parametrize(("field", "value"), CREATE_ONLY_EDITS, ids=CREATE_ONLY_IDS)
def test_recreate_allows_create_only_edits(kubectl: Kubectl, field: str, value: Any) -> None:
    assert create(kubectl, "recreating", FULL_SPEC).returncode == 0

    result = patch_spec(kubectl, "recreating", {field: value})

    assert result.returncode == 0, result.stderr
    assert get(kubectl, "recreating")["spec"].get(field) == value


def test_reject_still_allows_patchable_edits(kubectl: Kubectl, rejecting: str) -> None:
    result = patch_spec(kubectl, rejecting, {"batchSize": 10, "paused": True, "metadata": {"team": "media"}})

    assert result.returncode == 0, result.stderr


def test_leaving_reject_and_editing_in_one_step_is_refused(kubectl: Kubectl, rejecting: str) -> None:
    result = patch_spec(kubectl, rejecting, {"replacementPolicy": "Recreate", "bucketId": "bkt_media"})

    assert refused_naming(result, "spec.bucketId"), result.stderr


def test_entering_reject_and_editing_in_one_step_is_refused(kubectl: Kubectl) -> None:
    assert create(kubectl, "entering", BASE).returncode == 0

    result = patch_spec(
        kubectl, "entering", {"replacementPolicy": "Reject", "sourcePath": "demo-bucket/other"}
    )

    assert refused_naming(result, "spec.sourcePath"), result.stderr


def test_switching_to_recreate_first_then_editing_is_allowed(kubectl: Kubectl, rejecting: str) -> None:
    assert patch_spec(kubectl, rejecting, {"replacementPolicy": "Recreate"}).returncode == 0

    result = patch_spec(kubectl, rejecting, {"bucketId": "bkt_media"})

    assert result.returncode == 0, result.stderr


# --- discovery, explain, printer columns, status --------------------------------------------


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _object_nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Object schemas with properties, by their `kubectl explain` path (maps and lists are transparent)."""
    if "properties" in node:
        yield path, node
        for name, sub in node["properties"].items():
            yield from _object_nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _object_nodes(node[key], path)


def test_kubectl_explain_describes_every_spec_field(cluster: ControlPlane) -> None:
    spec_schema = crd.openapi_schema()["properties"]["spec"]
    explained = 0
    for path, node in _object_nodes(spec_schema, f"{constants.SINGULAR}.spec"):
        output = _normalised(cluster.kubectl("explain", path).stdout)
        for name, child in node["properties"].items():
            assert re.search(rf"\b{name}\b", output), f"{path}.{name} missing from kubectl explain"
            assert _normalised(child["description"]) in output, f"{path}.{name} is not described"
            explained += 1
    assert explained >= 40


def test_short_name_and_category_list_objects(kubectl: Kubectl) -> None:
    assert create(kubectl, "listed", BASE).returncode == 0

    for resource in (constants.SHORT_NAME, constants.CATEGORY, constants.PLURAL):
        result = kubectl("get", resource, "-o", "name")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [f"{constants.SINGULAR}.{constants.GROUP}/listed"]


def test_status_written_by_the_operator_fills_the_printer_columns(kubectl: Kubectl) -> None:
    assert create(kubectl, "shown", {**BASE, "syncMode": "initial_only"}).returncode == 0
    status = BucketSyncStatus(
        observed_generation=1,
        conditions=[
            Condition(
                type=constants.ConditionType.READY,
                status=ConditionStatus.TRUE,
                reason=constants.Reason.SYNCED,
                message="remote sync matches spec",
                last_transition_time="2025-01-01T00:00:00Z",
                observed_generation=1,
            )
        ],
        sync_config_id="sync_abc",
        remote=RemoteStatus(
            status="ACTIVE", is_active=True, paused=False, last_sync_at="2025-01-01T00:00:00Z"
        ),
        metrics=SyncMetrics(files_synced=12, files_failed=1),
    )
    patch = json.dumps({"status": status.model_dump(mode="json", exclude_none=True)})

    patched = kubectl(
        "patch", f"{constants.PLURAL}/shown", "--subresource=status", "--type=merge", "-p", patch
    )
    assert patched.returncode == 0, patched.stderr

    table = kubectl("get", constants.SHORT_NAME, "shown", "-o", "wide").stdout.splitlines()
    header = (
        "NAME BUCKET MODE READY REASON PAUSED REMOTE STATUS FILES SYNCED FILES FAILED LAST SYNC AGE SYNC ID"
    )
    assert _normalised(table[0]) == header
    assert table[1].split()[:9] == [
        "shown",
        "bkt_demo",
        "initial_only",
        "True",
        "Synced",
        "false",
        "ACTIVE",
        "12",
        "1",
    ]
    assert table[1].split()[-1] == "sync_abc"
    waited = kubectl("wait", "--for=condition=Ready", "--timeout=5s", f"{constants.PLURAL}/shown")
    assert waited.returncode == 0, waited.stderr


def test_the_invalid_corpus_never_reaches_mixpeek(
    kubectl: Kubectl,
    mixpeek: EmulatorProcess,
    credentials: str,
    start_operator: OperatorFactory,
    namespace: str,
) -> None:
    """With the operator running, every invalid manifest is refused and Mixpeek sees nothing of it."""
    start_operator(namespace)
    for case_id, spec, field_path in INVALID:
        result = create(kubectl, "invalid", {"credentialsRef": {"name": credentials}, **spec})
        assert refused_naming(result, field_path), case_id
    # A valid object proves the operator was watching all along: only its create arrives.
    assert create(kubectl, "valid", {**BASE, "credentialsRef": {"name": credentials}}).returncode == 0
    wait_for(lambda: is_ready(json.loads(kubectl("get", "bucketsync", "valid", "-o", "json").stdout)), 30)
    assert endpoint_counts(mixpeek.admin) == {**dict.fromkeys(ENDPOINTS, 0), "create": 1, "list": 1}
