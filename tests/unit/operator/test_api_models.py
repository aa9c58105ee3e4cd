"""The BucketSync pydantic models: aliases, defaults, strictness, and agreement with the API models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import ValidationError

from mixpeek_operator import constants
from mixpeek_operator.api.v1alpha1 import (
    CREATE_ONLY_FIELDS,
    OWNER_MARKER_KEYS,
    USER_METADATA_MAX_KEYS,
    BucketSyncSpec,
    BucketSyncStatus,
    DeletionPolicy,
    ManagementPolicy,
    MappingEntrySpec,
    ReplacementPolicy,
    SourceType,
    TargetType,
)
from mixpeek_operator.mixpeek import models

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MINIMAL = {"bucketId": "bkt_demo", "connectionId": "conn_s3_demo", "sourcePath": "demo-bucket/docs"}


def example_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] == constants.KIND:
                specs.append((f"{path.name}:{document['metadata']['name']}", document["spec"]))
    return specs


def test_defaults_match_the_api() -> None:
    spec = BucketSyncSpec.model_validate(MINIMAL)

    assert spec.sync_mode is models.SyncMode.CONTINUOUS
    assert spec.polling_interval_seconds == models.POLLING_INTERVAL_DEFAULT
    assert spec.batch_size == models.BATCH_SIZE_DEFAULT
    assert spec.skip_batch_submission is False
    assert spec.paused is False
    assert spec.deletion_policy is DeletionPolicy.DELETE
    assert spec.management_policy is ManagementPolicy.FULL
    assert spec.replacement_policy is ReplacementPolicy.RECREATE
    assert spec.file_filters is None
    assert spec.schema_mapping is None


def test_parses_camel_case_and_dumps_it_back() -> None:
    raw = {
        **MINIMAL,
        "fileFilters": {
            "includePatterns": ["*.mp4"],
            "minSizeBytes": 1,
            "modifiedAfter": "2025-01-01T00:00:00Z",
        },
        "schemaMapping": {
            "mappings": {
                "content": {
                    "targetType": "blob",
                    "source": {"type": "file"},
                    "mimeTypeOverride": "video/mp4",
                },
                "folder": {"source": {"type": "folder_path", "fullPath": True}},
            }
        },
        "credentialsRef": {"name": "mixpeek-credentials"},
        "syncConfigId": "sync_abc",
    }
    spec = BucketSyncSpec.model_validate(raw)

    assert spec.file_filters is not None
    assert spec.file_filters.include_patterns == ["*.mp4"]
    assert spec.schema_mapping is not None
    assert spec.schema_mapping.mappings["content"].target_type is TargetType.BLOB
    assert spec.schema_mapping.mappings["folder"].source.full_path is True
    assert spec.schema_mapping.mappings["folder"].target_type is TargetType.FIELD
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["fileFilters"]["modifiedAfter"] == "2025-01-01T00:00:00Z"
    assert dumped["schemaMapping"]["mappings"]["content"]["mimeTypeOverride"] == "video/mp4"
    assert dumped["credentialsRef"] == {"name": "mixpeek-credentials"}


def test_python_names_are_accepted_too() -> None:
    spec = BucketSyncSpec(bucket_id="b", connection_id="c", source_path="p", batch_size=7)

    assert spec.batch_size == 7


@pytest.mark.parametrize(
    "patch",
    [
        {"unknownField": 1},
        {"fileFilters": {"extensions": [".mp4"]}},
        {"schemaMapping": {"mappings": {"x": {"source": {"type": "file"}, "blob_kind": "auto"}}}},
        {"credentialsRef": {"name": "s", "key": "apiKey"}},
    ],
    ids=["spec", "fileFilters", "mapping-entry", "credentialsRef"],
)
def test_unknown_spec_fields_are_refused(patch: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BucketSyncSpec.model_validate({**MINIMAL, **patch})


@pytest.mark.parametrize(
    "patch",
    [
        {"batchSize": 0},
        {"batchSize": 101},
        {"pollingIntervalSeconds": 29},
        {"pollingIntervalSeconds": 901},
        {"syncMode": "scheduled"},
        {"bucketId": ""},
        {"fileFilters": {"minSizeBytes": -1}},
        {"metadata": {f"k{i}": "v" for i in range(USER_METADATA_MAX_KEYS + 1)}},
        {"deletionPolicy": "Keep"},
    ],
)
def test_bounds_and_enums_follow_the_api(patch: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BucketSyncSpec.model_validate({**MINIMAL, **patch})


def test_constant_value_rule_cel_cannot_express_is_checked_when_parsing() -> None:
    def source(source: dict[str, Any]) -> dict[str, Any]:
        return {**MINIMAL, "schemaMapping": {"mappings": {"x": {"source": source}}}}

    BucketSyncSpec.model_validate(source({"type": "constant", "value": {"a": [1, 2]}}))
    with pytest.raises(ValidationError, match=r"source\.value is required for source type constant"):
        BucketSyncSpec.model_validate(source({"type": "constant"}))
    with pytest.raises(ValidationError, match=r"source\.value is required for source type constant"):
        BucketSyncSpec.model_validate(source({"type": "tag", "key": "k", "value": "v"}))


def test_metadata_leaves_room_for_the_ownership_marker() -> None:
    assert USER_METADATA_MAX_KEYS + len(OWNER_MARKER_KEYS) == models.METADATA_MAX_KEYS
    assert all(key.startswith(constants.RESERVED_METADATA_PREFIX) for key in OWNER_MARKER_KEYS)


def test_source_types_are_the_api_discriminators() -> None:
    variants = get_args(get_args(models.Source)[0])
    assert {variant.model_fields["type"].default for variant in variants} == set(SourceType)


def test_enums_reuse_the_api_enums() -> None:
    entry = MappingEntrySpec.model_fields
    assert BucketSyncSpec.model_fields["sync_mode"].annotation is models.SyncMode
    assert entry["blob_type"].annotation == models.BlobType | None
    assert entry["transform"].annotation == models.FieldTransform | None
    assert {
        variant.model_fields["target_type"].default for variant in get_args(get_args(models.MappingEntry)[0])
    } == set(TargetType)


def test_create_only_fields_are_spec_fields() -> None:
    aliases = {field.alias for field in BucketSyncSpec.model_fields.values()}
    assert set(CREATE_ONLY_FIELDS) <= aliases


@pytest.mark.parametrize(
    ("name", "spec"), example_specs(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_examples_parse(name: str, spec: dict[str, Any]) -> None:
    BucketSyncSpec.model_validate(spec)


def test_status_parses_and_dumps_camel_case_and_tolerates_unknown_fields() -> None:
    raw = {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Synced",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
        "syncConfigId": "sync_1",
        "remote": {"status": "ACTIVE", "isActive": True, "lastSyncAt": "2025-01-01T00:00:00Z"},
        "metrics": {"filesSynced": 10},
        "drift": [{"field": "spec.batchSize", "desired": "50", "observed": "10"}],
        "fieldFromANewerOperator": True,
    }
    status = BucketSyncStatus.model_validate(raw)

    assert status.conditions is not None
    assert status.conditions[0].status == "True"
    assert status.remote is not None
    assert status.remote.is_active is True
    dumped = status.model_dump(mode="json", exclude_none=True)
    assert dumped["remote"] == {"status": "ACTIVE", "isActive": True, "lastSyncAt": "2025-01-01T00:00:00Z"}
    assert dumped["metrics"] == {"filesSynced": 10}
    assert "fieldFromANewerOperator" not in dumped


def test_examples_exist() -> None:
    names = {name.split(":")[0] for name, _ in example_specs()}
    assert {"bucketsync-minimal.yaml", "bucketsync-s3.yaml"} <= names
    secret = yaml.safe_load((EXAMPLES / "credentials-secret.yaml").read_text())
    assert secret["stringData"][constants.SECRET_API_KEY] == "sk_test_emulator"
