"""Desired remote state of a `BucketSync`, and how a remote sync differs from it. Pure: no I/O, no kopf.

Comparison happens on *normalised JSON*: both sides go through the Mixpeek API models
(so server-filled defaults such as ``blob_property: "content"`` are on both sides),
timestamps are reduced to UTC, and unset/empty filters are one value. A spec that was
just created remotely therefore shows no drift.

Every function that builds API models raises `SpecConversionError` for a spec that passed
admission but that the API models refuse (e.g. a filename regex without exactly one group).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from pydantic import ValidationError

from mixpeek_operator.api.v1alpha1 import (
    DRIFT_VALUE_MAX_LENGTH,
    BucketSyncSpec,
    DeletionPolicy,
    DriftEntry,
)
from mixpeek_operator.constants import OWNER_REF_KEY, OWNER_UID_KEY, RESERVED_METADATA_PREFIX
from mixpeek_operator.mixpeek.models import (
    FileFilters,
    SchemaMapping,
    SyncConfiguration,
    SyncCreateRequest,
    SyncUpdateRequest,
)

# Remote fields a PATCH can change, and those only a new remote sync can change. Their
# Python names in BucketSyncSpec are the API's names, so the spec path follows from the alias.
PATCHABLE_FIELDS: Final = (
    "schema_mapping",
    "polling_interval_seconds",
    "batch_size",
    "skip_batch_submission",
    "metadata",
)
CREATE_ONLY_REMOTE_FIELDS: Final = ("connection_id", "source_path", "sync_mode", "file_filters")

_ApiModel = TypeVar("_ApiModel", FileFilters, SchemaMapping)


class SpecConversionError(ValueError):
    """The spec passed admission but cannot be expressed as a Mixpeek request (an invalid spec)."""


@dataclass(frozen=True)
class FieldDiff:
    """One remote field whose value differs from the spec; values are compact JSON."""

    field: str
    remote_field: str
    desired: str
    observed: str

    def to_status(self) -> DriftEntry:
        return DriftEntry(field=self.field, desired=_clip(self.desired), observed=_clip(self.observed))


def spec_path(remote_field: str) -> str:
    """``batch_size`` -> ``spec.batchSize``."""
    return f"spec.{BucketSyncSpec.model_fields[remote_field].alias}"


def owner_metadata(uid: str, namespace: str, name: str) -> dict[str, str]:
    """The ownership marker stored in the remote sync's metadata."""
    return {OWNER_UID_KEY: uid, OWNER_REF_KEY: f"{namespace}/{name}"}


def desired_metadata(spec: BucketSyncSpec, owner: Mapping[str, str]) -> dict[str, str]:
    # Admission refuses user keys under the reserved prefix; the marker wins regardless.
    return {**(spec.metadata or {}), **owner}


def api_file_filters(spec: BucketSyncSpec) -> FileFilters | None:
    if spec.file_filters is None:
        return None
    return _to_api(FileFilters, spec.file_filters.model_dump(by_alias=False, exclude_none=True))


def api_schema_mapping(spec: BucketSyncSpec) -> SchemaMapping | None:
    if spec.schema_mapping is None:
        return None
    return _to_api(SchemaMapping, spec.schema_mapping.model_dump(by_alias=False, exclude_none=True))


def create_request(spec: BucketSyncSpec, owner: Mapping[str, str]) -> SyncCreateRequest:
    return SyncCreateRequest(
        connection_id=spec.connection_id,
        source_path=spec.source_path,
        sync_mode=spec.sync_mode,
        file_filters=api_file_filters(spec),
        schema_mapping=api_schema_mapping(spec),
        polling_interval_seconds=spec.polling_interval_seconds,
        batch_size=spec.batch_size,
        skip_batch_submission=spec.skip_batch_submission,
        metadata=desired_metadata(spec, owner),
    )


def desired_remote_fields(spec: BucketSyncSpec, owner: Mapping[str, str]) -> dict[str, Any]:
    """Normalised desired values of the patchable remote fields.

    `schema_mapping` is only included when the spec sets it: unset means "the provider
    default", which is whatever Mixpeek stored, not something to correct.
    """
    fields: dict[str, Any] = {}
    if spec.schema_mapping is not None:
        fields["schema_mapping"] = _normal_schema_mapping(api_schema_mapping(spec))
    fields["polling_interval_seconds"] = spec.polling_interval_seconds
    fields["batch_size"] = spec.batch_size
    fields["skip_batch_submission"] = spec.skip_batch_submission
    fields["metadata"] = desired_metadata(spec, owner)
    return fields


def _observed_remote_fields(remote: SyncConfiguration) -> dict[str, Any]:
    return {
        "schema_mapping": _normal_schema_mapping(remote.schema_mapping),
        "polling_interval_seconds": remote.polling_interval_seconds,
        "batch_size": remote.batch_size,
        "skip_batch_submission": remote.skip_batch_submission,
        "metadata": remote.metadata,
    }


def _patchable_differences(
    spec: BucketSyncSpec, owner: Mapping[str, str], remote: SyncConfiguration
) -> list[tuple[str, Any, Any]]:
    desired = desired_remote_fields(spec, owner)
    observed = _observed_remote_fields(remote)
    return [
        (name, desired[name], observed[name])
        for name in PATCHABLE_FIELDS
        if name in desired and _json(desired[name]) != _json(observed[name])
    ]


def patch_for(
    spec: BucketSyncSpec, owner: Mapping[str, str], remote: SyncConfiguration
) -> SyncUpdateRequest | None:
    """A PATCH of exactly the patchable fields that differ, or None when nothing does.

    Any PATCH also carries `metadata`: Mixpeek replaces metadata wholesale, and re-sending
    the ownership marker every time keeps it from ever being lost.
    """
    differences = _patchable_differences(spec, owner, remote)
    if not differences:
        return None
    body = {name: desired for name, desired, _ in differences}
    body["metadata"] = desired_metadata(spec, owner)
    return SyncUpdateRequest.model_validate(body)


def pause_action(spec: BucketSyncSpec, remote: SyncConfiguration) -> Literal["pause", "resume"] | None:
    """spec.paused drives /pause and /resume: the call that makes the remote match, if any."""
    if spec.paused == remote.paused:
        return None
    return "pause" if spec.paused else "resume"


def create_only_differences(spec: BucketSyncSpec, remote: SyncConfiguration) -> list[FieldDiff]:
    """Create-only fields whose remote value differs: only a new remote sync can fix them."""
    desired = {
        "connection_id": spec.connection_id,
        "source_path": spec.source_path,
        "sync_mode": spec.sync_mode.value,
        "file_filters": _normal_file_filters(api_file_filters(spec)),
    }
    observed = {
        "connection_id": remote.connection_id,
        "source_path": remote.source_path,
        "sync_mode": remote.sync_mode.value,
        "file_filters": _normal_file_filters(remote.file_filters),
    }
    return [
        _diff(name, desired[name], observed[name])
        for name in CREATE_ONLY_REMOTE_FIELDS
        if _json(desired[name]) != _json(observed[name])
    ]


def drift(spec: BucketSyncSpec, owner: Mapping[str, str], remote: SyncConfiguration) -> list[FieldDiff]:
    """Every remote value that differs from the spec (pause state is handled by the caller)."""
    patchable = [
        _diff(name, desired, observed)
        for name, desired, observed in _patchable_differences(spec, owner, remote)
    ]
    return patchable + create_only_differences(spec, remote)


# --- the inverse: a remote sync as a spec (`kubectl mixpeek import`) ---------------------------

# Values the API models fill in when a mapping leaves them out; a spec omits them too.
_MAPPING_DEFAULTS: Final = {"required": False, "blob_type": "auto", "blob_property": "content"}
_SOURCE_DEFAULTS: Final = {"full_path": False}


def user_metadata(remote: SyncConfiguration) -> dict[str, str] | None:
    """The remote metadata without the operator's reserved keys (ours or another cluster's marker).

    Raises SpecConversionError for a non-string value, which spec.metadata cannot hold.
    """
    kept: dict[str, str] = {}
    for key, value in (remote.metadata or {}).items():
        if key.startswith(RESERVED_METADATA_PREFIX):
            continue
        if not isinstance(value, str):
            raise SpecConversionError(
                f"metadata key {key!r} holds a {type(value).__name__}; spec.metadata holds strings only"
            )
        kept[key] = value
    return kept or None


def spec_from_remote(
    remote: SyncConfiguration,
    *,
    credentials_ref: str | None = None,
    mixpeek_namespace: str | None = None,
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE,
) -> BucketSyncSpec:
    """The spec that adopts `remote` exactly: `create_request`/`patch_for` of it change nothing.

    The exact inverse of the create/patch mapping above, on the same normalised values, so a
    manifest written from it shows no drift (only the ownership marker is missing remotely).
    Raises SpecConversionError when the remote sync holds something a spec cannot express.
    """
    filters = _normal_file_filters(remote.file_filters)
    body: dict[str, Any] = {
        "bucket_id": remote.bucket_id,
        "connection_id": remote.connection_id,
        "source_path": remote.source_path,
        "sync_mode": remote.sync_mode.value,
        "file_filters": filters or None,
        "schema_mapping": _spec_schema_mapping(remote.schema_mapping),
        "polling_interval_seconds": remote.polling_interval_seconds,
        "batch_size": remote.batch_size,
        "skip_batch_submission": remote.skip_batch_submission,
        "metadata": user_metadata(remote),
        "paused": remote.paused,
        "sync_config_id": remote.sync_config_id,
        "credentials_ref": {"name": credentials_ref} if credentials_ref else None,
        "mixpeek_namespace": mixpeek_namespace,
        "deletion_policy": deletion_policy.value,
    }
    try:
        return BucketSyncSpec.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SpecConversionError(problems) from exc


def _spec_schema_mapping(mapping: SchemaMapping | None) -> dict[str, Any] | None:
    if mapping is None:
        return None
    entries: dict[str, Any] = {}
    for name, entry in mapping.mappings.items():
        dumped = entry.model_dump(mode="json", exclude_none=True)
        source = {k: v for k, v in dumped.pop("source").items() if _SOURCE_DEFAULTS.get(k, ...) != v}
        if entry.source.type == "constant":
            source["value"] = entry.source.model_dump(mode="json")["value"]  # null is a value here
        entries[name] = {
            **{k: v for k, v in dumped.items() if _MAPPING_DEFAULTS.get(k, ...) != v},
            "source": source,
        }
    return {"mappings": entries}


# --- normalisation --------------------------------------------------------------------------


def _to_api(model: type[_ApiModel], data: dict[str, Any]) -> _ApiModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecConversionError(str(exc)) from exc


def _normal_schema_mapping(mapping: SchemaMapping | None) -> Any:
    return None if mapping is None else mapping.model_dump(mode="json", exclude_none=True)


def _normal_file_filters(filters: FileFilters | None) -> dict[str, Any]:
    """Declared filter fields only, no null or empty values, timestamps in UTC.

    Unknown keys a newer server may add (0.82's `metadata_filters`) are not ours to
    compare: counting them would recreate every sync under `replacementPolicy: Recreate`.
    An empty pattern list filters nothing, so it equals an unset one.
    """
    if filters is None:
        return {}
    normal: dict[str, Any] = {}
    for name in FileFilters.model_fields:
        value = getattr(filters, name)
        if value is None or value == []:
            continue
        normal[name] = _utc_iso(value) if isinstance(value, datetime) else value
    return normal


def _utc_iso(moment: datetime) -> str:
    # Servers may drop the offset (naive UTC) or spell it +00:00; all mean the same instant.
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _diff(remote_field: str, desired: Any, observed: Any) -> FieldDiff:
    return FieldDiff(
        field=spec_path(remote_field),
        remote_field=remote_field,
        desired=_json(desired),
        observed=_json(observed),
    )


def _clip(text: str) -> str:
    """Fit a JSON value into the status field's maxLength."""
    return text if len(text) <= DRIFT_VALUE_MAX_LENGTH else text[: DRIFT_VALUE_MAX_LENGTH - 1] + "…"
