"""desired.py: spec -> Mixpeek requests, and spec vs remote comparison with the real API models."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import DRIFT_VALUE_MAX_LENGTH, BucketSyncSpec
from mixpeek_operator.constants import OWNER_REF_KEY, OWNER_UID_KEY
from mixpeek_operator.mixpeek.models import (
    BlobMappingEntry,
    FieldMappingEntry,
    FileFilters,
    SyncConfiguration,
    SyncCreateRequest,
    SyncMode,
)

OWNER = desired.owner_metadata("uid-1", "media", "videos")
MINIMAL: dict[str, Any] = {
    "bucketId": "bkt_demo",
    "connectionId": "conn_s3_demo",
    "sourcePath": "demo-bucket/videos",
}
FULL: dict[str, Any] = {
    **MINIMAL,
    "syncMode": "initial_only",
    "fileFilters": {
        "includePatterns": ["*.mp4", "*.mov"],
        "excludePatterns": [],
        "minSizeBytes": 1,
        "maxSizeBytes": 1 << 31,
        "modifiedAfter": "2025-01-01T00:00:00Z",
        "modifiedBefore": "2025-06-01T12:30:00.250+02:00",
        "mimeTypes": ["video/*"],
    },
    "schemaMapping": {
        "mappings": {
            "content": {"targetType": "blob", "source": {"type": "file"}},
            "thumbnail": {
                "targetType": "blob",
                "source": {"type": "metadata", "key": "thumb-url"},
                "blobType": "image",
            },
            "title": {"source": {"type": "filename_regex", "pattern": r"^(.+)\.\w+$", "default": "untitled"}},
            "campaign": {
                "source": {"type": "tag", "key": "campaign"},
                "transform": "lowercase",
                "required": True,
            },
            "folder": {"source": {"type": "folder_path", "segment": -1}},
            "path": {"source": {"type": "folder_path", "fullPath": True}},
            "extra": {"source": {"type": "constant", "value": {"tier": 1, "tags": ["a", None]}}},
        }
    },
    "pollingIntervalSeconds": 60,
    "batchSize": 25,
    "skipBatchSubmission": True,
    "metadata": {"team": "media"},
}


def spec_of(raw: dict[str, Any], **changes: Any) -> BucketSyncSpec:
    return BucketSyncSpec.model_validate({**raw, **changes})


def served(request: SyncCreateRequest, **overrides: Any) -> SyncConfiguration:
    """The remote sync as the server returns it: the request plus server fields and defaults."""
    body = {
        **request.model_dump(mode="json", exclude_none=True),
        "sync_config_id": "sync_abc",
        "bucket_id": "bkt_demo",
        "internal_id": "org",
        "namespace_id": "ns",
        "created_by_user_id": "usr",
        **overrides,
    }
    return SyncConfiguration.model_validate(json.loads(json.dumps(body)))


def test_owner_metadata() -> None:
    assert OWNER == {OWNER_UID_KEY: "uid-1", OWNER_REF_KEY: "media/videos"}


def test_create_request_maps_every_field_and_merges_the_owner_marker() -> None:
    request = desired.create_request(spec_of(FULL), OWNER)

    assert request.connection_id == "conn_s3_demo"
    assert request.source_path == "demo-bucket/videos"
    assert request.sync_mode is SyncMode.INITIAL_ONLY
    assert request.polling_interval_seconds == 60
    assert request.batch_size == 25
    assert request.skip_batch_submission is True
    assert request.metadata == {"team": "media", **OWNER}
    assert request.file_filters is not None
    assert request.file_filters.max_size_bytes == 1 << 31
    assert request.schema_mapping is not None
    mappings = request.schema_mapping.mappings
    assert isinstance(mappings["content"], BlobMappingEntry)
    assert (mappings["content"].blob_type, mappings["content"].blob_property) == ("auto", "content")
    assert isinstance(mappings["campaign"], FieldMappingEntry)
    assert mappings["campaign"].transform == "lowercase"
    assert mappings["campaign"].required is True
    assert mappings["path"].source.model_dump() == {"type": "folder_path", "segment": None, "full_path": True}


def test_minimal_create_request_leaves_optional_parts_to_the_server() -> None:
    request = desired.create_request(spec_of(MINIMAL), OWNER)

    body = request.model_dump(mode="json", exclude_none=True)
    assert "file_filters" not in body
    assert "schema_mapping" not in body
    assert body["metadata"] == OWNER


@pytest.mark.parametrize("raw", [MINIMAL, FULL], ids=["minimal", "full"])
def test_round_trip_through_the_server_shows_no_drift(raw: dict[str, Any]) -> None:
    spec = spec_of(raw)
    remote = served(desired.create_request(spec, OWNER))

    assert desired.drift(spec, OWNER, remote) == []
    assert desired.patch_for(spec, OWNER, remote) is None
    assert desired.create_only_differences(spec, remote) == []


@pytest.mark.parametrize(
    ("after", "before"),
    [
        ("2025-01-01T00:00:00", "2025-06-01T10:30:00.250000"),  # offset dropped: naive UTC
        ("2025-01-01T00:00:00+00:00", "2025-06-01T10:30:00.250+00:00"),
        ("2025-01-01T01:00:00+01:00", "2025-06-01T10:30:00.25Z"),
    ],
)
def test_timestamps_compare_as_instants(after: str, before: str) -> None:
    spec = spec_of(FULL)
    request = desired.create_request(spec, OWNER)
    filters = {
        **request.model_dump(mode="json")["file_filters"],
        "modified_after": after,
        "modified_before": before,
    }

    assert desired.create_only_differences(spec, served(request, file_filters=filters)) == []


@pytest.mark.parametrize("remote_filters", [None, {}, {"include_patterns": None, "mime_types": []}])
def test_unset_filters_equal_null_or_empty_remote_filters(remote_filters: Any) -> None:
    spec = spec_of(MINIMAL)
    remote = served(desired.create_request(spec, OWNER), file_filters=remote_filters)

    assert desired.create_only_differences(spec, remote) == []


def test_unknown_remote_filter_keys_are_not_differences() -> None:
    spec = spec_of(FULL)
    request = desired.create_request(spec, OWNER)
    filters = {**request.model_dump(mode="json")["file_filters"], "metadata_filters": [{"field": "x"}]}

    assert desired.create_only_differences(spec, served(request, file_filters=filters)) == []


def test_unset_schema_mapping_accepts_the_provider_default() -> None:
    spec = spec_of(MINIMAL)
    provider_default = {"mappings": {"content": {"target_type": "blob", "source": {"type": "file"}}}}
    remote = served(desired.create_request(spec, OWNER), schema_mapping=provider_default)

    assert "schema_mapping" not in desired.desired_remote_fields(spec, OWNER)
    assert desired.drift(spec, OWNER, remote) == []


def test_desired_remote_fields_are_normalised_json() -> None:
    fields = desired.desired_remote_fields(spec_of(FULL), OWNER)

    assert list(fields) == list(desired.PATCHABLE_FIELDS)
    assert fields["metadata"] == {"team": "media", **OWNER}
    assert fields["schema_mapping"]["mappings"]["content"] == {
        "target_type": "blob",
        "source": {"type": "file"},
        "blob_type": "auto",
        "blob_property": "content",
    }
    assert json.loads(json.dumps(fields)) == fields


def test_patch_contains_only_what_differs_plus_the_owner_marker() -> None:
    spec = spec_of(FULL)
    remote = served(desired.create_request(spec, OWNER), batch_size=10, polling_interval_seconds=60)

    patch = desired.patch_for(spec, OWNER, remote)

    assert patch is not None
    assert patch.model_dump(exclude_none=True) == {"batch_size": 25, "metadata": {"team": "media", **OWNER}}


def test_patch_restores_a_lost_owner_marker_and_changed_mapping() -> None:
    spec = spec_of(FULL)
    mapping = {
        "mappings": {"content": {"target_type": "blob", "source": {"type": "file"}, "blob_type": "video"}}
    }
    remote = served(desired.create_request(spec, OWNER), metadata={"team": "media"}, schema_mapping=mapping)

    patch = desired.patch_for(spec, OWNER, remote)

    assert patch is not None
    assert set(patch.model_dump(exclude_none=True)) == {"metadata", "schema_mapping"}
    assert patch.schema_mapping == desired.api_schema_mapping(spec)
    assert [diff.field for diff in desired.drift(spec, OWNER, remote)] == [
        "spec.schemaMapping",
        "spec.metadata",
    ]


def test_create_only_differences_name_spec_and_remote_fields() -> None:
    spec = spec_of(FULL)
    request = desired.create_request(spec, OWNER)
    remote = served(request, source_path="demo-bucket/other", sync_mode="continuous", file_filters=None)

    diffs = desired.create_only_differences(spec, remote)

    assert [(diff.field, diff.remote_field) for diff in diffs] == [
        ("spec.sourcePath", "source_path"),
        ("spec.syncMode", "sync_mode"),
        ("spec.fileFilters", "file_filters"),
    ]
    assert (diffs[0].desired, diffs[0].observed) == ('"demo-bucket/videos"', '"demo-bucket/other"')
    assert diffs[2].observed == "{}"


def test_drift_lists_patchable_then_create_only_fields() -> None:
    spec = spec_of(FULL)
    remote = served(
        desired.create_request(spec, OWNER), skip_batch_submission=False, connection_id="conn_other"
    )

    diffs = desired.drift(spec, OWNER, remote)

    assert [diff.field for diff in diffs] == ["spec.skipBatchSubmission", "spec.connectionId"]
    assert (diffs[0].desired, diffs[0].observed) == ("true", "false")


def test_drift_values_are_clipped_for_status() -> None:
    diff = desired.FieldDiff(
        field="spec.metadata", remote_field="metadata", desired="x" * 10_000, observed="{}"
    )

    entry = diff.to_status()

    assert entry.desired is not None
    assert len(entry.desired) == DRIFT_VALUE_MAX_LENGTH
    assert entry.desired.endswith("…")
    assert entry.observed == "{}"


def test_spec_the_api_refuses_raises_a_conversion_error() -> None:
    two_groups = {"mappings": {"title": {"source": {"type": "filename_regex", "pattern": "(a)(b)"}}}}

    with pytest.raises(desired.SpecConversionError, match="exactly one capture group"):
        desired.create_request(spec_of(MINIMAL, schemaMapping=two_groups), OWNER)


def test_spec_paths() -> None:
    assert desired.spec_path("batch_size") == "spec.batchSize"
    assert desired.spec_path("file_filters") == "spec.fileFilters"
    assert [desired.spec_path(name) for name in desired.CREATE_ONLY_REMOTE_FIELDS] == [
        "spec.connectionId",
        "spec.sourcePath",
        "spec.syncMode",
        "spec.fileFilters",
    ]


def test_api_file_filters_keeps_timestamps_as_datetimes() -> None:
    filters = desired.api_file_filters(spec_of(FULL))

    assert isinstance(filters, FileFilters)
    assert filters.modified_after is not None
    assert filters.modified_after.utcoffset() is not None
