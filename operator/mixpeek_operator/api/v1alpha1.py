"""`BucketSync` v1alpha1: pydantic models of the spec and status, the single source of the CRD.

`crd.py` turns these models into the structural OpenAPI schema of the CRD, so every
bound, enum, default, description and CEL rule (``x-kubernetes-validations``) is
written here once. Validation that needs more than one field lives in CEL so that the
API server refuses bad objects at admission; the models themselves stay thin parsers
of objects the API server has already accepted.

Python attribute names are the Mixpeek API's snake_case names; the Kubernetes names are
their camelCase aliases. Parsing accepts both; dumping uses the camelCase names.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mixpeek_operator.constants import (
    OWNER_CLUSTER_KEY,
    OWNER_REF_KEY,
    OWNER_UID_KEY,
    RESERVED_METADATA_PREFIX,
)
from mixpeek_operator.mixpeek.models import (
    BATCH_SIZE_DEFAULT,
    BATCH_SIZE_MAX,
    BATCH_SIZE_MIN,
    LAST_ERROR_MAX_LENGTH,
    METADATA_KEY_MAX_LENGTH,
    METADATA_MAX_KEYS,
    POLLING_INTERVAL_DEFAULT,
    POLLING_INTERVAL_MAX,
    POLLING_INTERVAL_MIN,
    TAG_KEY_MAX_LENGTH,
    BlobType,
    FieldTransform,
    SyncMode,
)

# --- bounds the API leaves open (ours; they also keep CEL cost estimates finite) -----------

ID_MAX_LENGTH: Final = 256
SOURCE_PATH_MAX_LENGTH: Final = 1024
PATTERN_MAX_LENGTH: Final = 1024
PATTERNS_MAX_ITEMS: Final = 100
MIME_TYPE_MAX_LENGTH: Final = 255
MAPPINGS_MAX_PROPERTIES: Final = 100
MAPPING_STRING_MAX_LENGTH: Final = 1024
METADATA_VALUE_MAX_LENGTH: Final = 2048
SECRET_NAME_MAX_LENGTH: Final = 253
# The operator's ownership marker shares the remote `metadata` with the user's keys,
# and Mixpeek caps the whole map at METADATA_MAX_KEYS.
OWNER_MARKER_KEYS: Final = (OWNER_UID_KEY, OWNER_REF_KEY, OWNER_CLUSTER_KEY)
USER_METADATA_MAX_KEYS: Final = METADATA_MAX_KEYS - len(OWNER_MARKER_KEYS)

CONDITIONS_MAX_ITEMS: Final = 16
DRIFT_MAX_ITEMS: Final = 16
DRIFT_VALUE_MAX_LENGTH: Final = 4096
CONDITION_MESSAGE_MAX_LENGTH: Final = 32768
# The Flux trick (operator-anchors §B1): a new object reads as "not yet observed" for
# kstatus until the operator first writes status.
STATUS_DEFAULT: Final = {"observedGeneration": -1}

DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MIME_TYPE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$"


# --- enums ----------------------------------------------------------------------------------


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class ManagementPolicy(StrEnum):
    FULL = "Full"
    OBSERVE_ONLY = "ObserveOnly"


class ReplacementPolicy(StrEnum):
    RECREATE = "Recreate"
    REJECT = "Reject"


class TargetType(StrEnum):
    FIELD = "field"
    BLOB = "blob"


class SourceType(StrEnum):
    """The `type` discriminators of the API's Source variants (reference §4.3)."""

    TAG = "tag"
    METADATA = "metadata"
    FILENAME_REGEX = "filename_regex"
    COLUMN = "column"
    DRIVE_PROPERTY = "drive_property"
    FOLDER_PATH = "folder_path"
    FILE = "file"
    CONSTANT = "constant"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# --- CEL helpers ----------------------------------------------------------------------------

CelRule = dict[str, str]


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> CelRule:
    """One ``x-kubernetes-validations`` entry; `field_path` is relative to the rule's node."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: CelRule) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def _only_for(prop: str, types: tuple[SourceType, ...], *, required: bool) -> CelRule:
    """A source property owned by some source types: required (or optional) there, refused elsewhere."""
    applies = f"self.type in {_cel_list(types)}" if len(types) > 1 else f"self.type == '{types[0]}'"
    names = " and ".join(", ".join(types).rsplit(", ", 1))
    kinds = "types" if len(types) > 1 else "type"
    if required:
        return cel(
            f"has(self.{prop}) == ({applies})",
            f"{_SOURCE_PATH}.{prop} is required for source {kinds} {names} and not allowed for other types",
            field_path=f".{prop}",
        )
    return cel(
        f"!has(self.{prop}) || {applies}",
        f"{_SOURCE_PATH}.{prop} is only allowed for source {kinds} {names}",
        field_path=f".{prop}",
        reason="FieldValueForbidden",
    )


def _only_for_target(prop: str, target: TargetType) -> CelRule:
    return cel(
        f"!has(self.{prop}) || self.targetType == '{target}'",
        f"{_ENTRY_PATH}.{prop} is only allowed when targetType is {target}",
        field_path=f".{prop}",
        reason="FieldValueForbidden",
    )


def _unchanged(prop: str) -> str:
    """CEL: `prop` is the same in the old and new object (including both being unset)."""
    return (
        f"(has(self.{prop}) == has(oldSelf.{prop}) && (!has(self.{prop}) || self.{prop} == oldSelf.{prop}))"
    )


_ENTRY_PATH: Final = "spec.schemaMapping.mappings[*]"
_SOURCE_PATH: Final = f"{_ENTRY_PATH}.source"
_KEYED_SOURCES: Final = (SourceType.TAG, SourceType.METADATA, SourceType.DRIVE_PROPERTY)


# --- spec -----------------------------------------------------------------------------------


class _SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


Pattern = Annotated[str, Field(min_length=1, max_length=PATTERN_MAX_LENGTH)]
MimeType = Annotated[str, Field(min_length=1, max_length=MIME_TYPE_MAX_LENGTH)]


class FileFiltersSpec(_SpecModel):
    """Which files the sync picks up; every field that is set must match (AND). Create-only."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.minSizeBytes) || !has(self.maxSizeBytes)"
                " || self.minSizeBytes <= self.maxSizeBytes",
                "spec.fileFilters.minSizeBytes must be less than or equal to spec.fileFilters.maxSizeBytes",
                field_path=".minSizeBytes",
            ),
            cel(
                "!has(self.modifiedAfter) || !has(self.modifiedBefore)"
                " || self.modifiedAfter < self.modifiedBefore",
                "spec.fileFilters.modifiedAfter must be earlier than spec.fileFilters.modifiedBefore",
                field_path=".modifiedAfter",
            ),
        )
    )

    include_patterns: list[Pattern] | None = Field(
        default=None,
        max_length=PATTERNS_MAX_ITEMS,
        description="Glob patterns (`*`, `?`, `[abc]`) a file must match, e.g. `*.mp4`.",
    )
    exclude_patterns: list[Pattern] | None = Field(
        default=None,
        max_length=PATTERNS_MAX_ITEMS,
        description="Glob patterns of files to skip, e.g. `*/drafts/*`.",
    )
    min_size_bytes: int | None = Field(
        default=None, ge=0, description="Smallest file size to sync, in bytes (inclusive)."
    )
    max_size_bytes: int | None = Field(
        default=None, ge=0, description="Largest file size to sync, in bytes (inclusive)."
    )
    modified_after: datetime | None = Field(
        default=None, description="Only files modified after this RFC 3339 time (provider timestamp)."
    )
    modified_before: datetime | None = Field(
        default=None, description="Only files modified before this RFC 3339 time (provider timestamp)."
    )
    mime_types: list[MimeType] | None = Field(
        default=None,
        max_length=PATTERNS_MAX_ITEMS,
        description="MIME types to sync; wildcards allowed, e.g. `video/*`.",
    )


class MappingSourceSpec(_SpecModel):
    """Where a mapped value comes from: `type` selects the variant, which uses only its own properties."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            _only_for("key", _KEYED_SOURCES, required=True),
            cel(
                f"self.type != '{SourceType.TAG}' || !has(self.key)"
                f" || size(self.key) <= {TAG_KEY_MAX_LENGTH}",
                f"{_SOURCE_PATH}.key must be at most {TAG_KEY_MAX_LENGTH} characters for source type tag",
                field_path=".key",
                reason="FieldValueInvalid",
            ),
            _only_for("pattern", (SourceType.FILENAME_REGEX,), required=True),
            _only_for("default", (SourceType.FILENAME_REGEX,), required=False),
            _only_for("name", (SourceType.COLUMN,), required=True),
            _only_for("segment", (SourceType.FOLDER_PATH,), required=False),
            _only_for("fullPath", (SourceType.FOLDER_PATH,), required=False),
        )
    )

    type: SourceType = Field(
        description=(
            "Source variant: `tag` (S3 object tag), `metadata` (S3 user metadata), `filename_regex` "
            "(capture group of the file name), `column` (table column), `drive_property` (Google Drive "
            "property), `folder_path` (parent folder), `file` (the file itself; blob mappings only) or "
            "`constant` (a fixed value)."
        )
    )
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=METADATA_KEY_MAX_LENGTH,
        description=(
            "Tag key (type tag, 1-128 characters, case-sensitive), metadata key without the "
            "`x-amz-meta-` prefix (type metadata, case-insensitive) or Drive property (type drive_property)."
        ),
    )
    pattern: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAPPING_STRING_MAX_LENGTH,
        description=(
            "Python regular expression with exactly one capture group, applied to the file name "
            "(type filename_regex)."
        ),
    )
    default: str | None = Field(
        default=None,
        max_length=MAPPING_STRING_MAX_LENGTH,
        description="Value used when `pattern` does not match (type filename_regex).",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAPPING_STRING_MAX_LENGTH,
        description="Column name (type column).",
    )
    segment: int | None = Field(
        default=None,
        description=(
            "Folder segment to use: 0 is the first, -1 the last (type folder_path; default: the "
            "immediate parent)."
        ),
    )
    full_path: bool | None = Field(
        default=None, description="Use the whole folder path (type folder_path; default false)."
    )
    value: Any = Field(
        default=None,
        description=(
            "The constant value, any JSON value (type constant, where it is required). Checked by the "
            "operator rather than at admission: CEL cannot see an untyped value."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _value_only_for_constant(self) -> MappingSourceSpec:
        # The one source rule CEL cannot express (see `value`); refused when the operator
        # parses the spec, which reports it as InvalidSpec.
        if (self.value is not None) != (self.type == SourceType.CONSTANT):
            raise ValueError(
                f"{_SOURCE_PATH}.value is required for source type constant and not allowed for other types"
            )
        return self


class MappingEntrySpec(_SpecModel):
    """How one bucket field or blob is filled. Field-only and blob-only properties may not be mixed."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"self.source.type != '{SourceType.FILE}' || self.targetType == '{TargetType.BLOB}'",
                f"{_SOURCE_PATH}.type file is only allowed when targetType is blob",
                field_path=".source.type",
            ),
            _only_for_target("transform", TargetType.FIELD),
            _only_for_target("required", TargetType.FIELD),
            _only_for_target("blobType", TargetType.BLOB),
            _only_for_target("blobProperty", TargetType.BLOB),
            _only_for_target("mimeTypeOverride", TargetType.BLOB),
        )
    )

    target_type: TargetType = Field(
        default=TargetType.FIELD,
        description="`field` fills a normal bucket schema field; `blob` fills a blob (file or URL).",
    )
    source: MappingSourceSpec = Field(description="Where the value comes from.")
    # Field-only and blob-only properties carry no CRD default: a default would be set on
    # every entry and then trip the "not allowed for this targetType" rules.
    transform: FieldTransform | None = Field(
        default=None, description="Applied after extraction (field entries only)."
    )
    required: bool | None = Field(
        default=None,
        description="Fail the sync when the value cannot be extracted (field entries only; default false).",
    )
    blob_type: BlobType | None = Field(
        default=None, description="Kind of blob (blob entries only; default auto)."
    )
    blob_property: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAPPING_STRING_MAX_LENGTH,
        description="Blob property in the bucket schema (blob entries only; default `content`).",
    )
    mime_type_override: str | None = Field(
        default=None,
        max_length=MIME_TYPE_MAX_LENGTH,
        pattern=MIME_TYPE_PATTERN,
        description="`type/subtype` that overrides MIME detection (blob entries only).",
    )


class SchemaMappingSpec(_SpecModel):
    """Maps source values onto the bucket's schema. Patchable; replaces the remote mapping as a whole."""

    mappings: dict[str, MappingEntrySpec] = Field(
        max_length=MAPPINGS_MAX_PROPERTIES,
        description="Bucket field or blob name -> how to fill it.",
    )


class CredentialsRef(_SpecModel):
    """A Secret in the BucketSync's own namespace with keys `apiKey`, optional `namespace` and `baseUrl`."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.__namespace__)",
                "cross-namespace Secret references are not allowed: remove spec.credentialsRef.namespace; "
                "the Secret must live in the BucketSync's namespace",
                field_path=".namespace",
                reason="FieldValueForbidden",
            )
        )
    )

    name: str = Field(
        min_length=1,
        max_length=SECRET_NAME_MAX_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret.",
    )
    # Declared only so that a CEL rule can refuse it loudly; an undeclared field would be
    # pruned silently for clients that do not use strict field validation.
    namespace: str | None = Field(
        default=None,
        max_length=SECRET_NAME_MAX_LENGTH,
        description="Not supported: cross-namespace Secret references are refused. Leave unset.",
    )


_REJECT: Final = ReplacementPolicy.REJECT
CREATE_ONLY_FIELDS: Final = (
    "bucketId",
    "connectionId",
    "sourcePath",
    "syncMode",
    "fileFilters",
    "mixpeekNamespace",
)


def _reject_guard(prop: str) -> CelRule:
    return cel(
        f"!(self.replacementPolicy == '{_REJECT}' || oldSelf.replacementPolicy == '{_REJECT}')"
        f" || {_unchanged(prop)}",
        f"spec.{prop} is create-only and cannot be changed while spec.replacementPolicy is Reject; "
        "set replacementPolicy: Recreate to allow replacing the remote sync",
        field_path=f".{prop}",
        reason="FieldValueForbidden",
    )


class BucketSyncSpec(_SpecModel):
    """Desired state of a Mixpeek bucket sync configuration."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"self.managementPolicy != '{ManagementPolicy.OBSERVE_ONLY}' || has(self.syncConfigId)",
                "spec.syncConfigId is required when spec.managementPolicy is ObserveOnly",
                field_path=".syncConfigId",
                reason="FieldValueRequired",
            ),
            cel(
                _unchanged("syncConfigId"),
                "spec.syncConfigId is immutable: it cannot be added, removed or changed after creation",
                field_path=".syncConfigId",
                reason="FieldValueForbidden",
            ),
            *(_reject_guard(prop) for prop in CREATE_ONLY_FIELDS),
        )
    )

    bucket_id: str = Field(
        min_length=1, max_length=ID_MAX_LENGTH, description="Mixpeek bucket the files sync into. Create-only."
    )
    connection_id: str = Field(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        description="Mixpeek storage connection to read from. Create-only.",
    )
    source_path: str = Field(
        min_length=1,
        max_length=SOURCE_PATH_MAX_LENGTH,
        description=(
            "Path in the storage provider: `bucket/prefix` (S3, Tigris), a folder id or path (Google "
            "Drive), `/sites/<site>/Shared Documents/<folder>` (SharePoint), `DB.SCHEMA.TABLE` "
            "(Snowflake). Create-only."
        ),
    )
    sync_mode: SyncMode = Field(
        default=SyncMode.CONTINUOUS,
        description="`continuous` polls every pollingIntervalSeconds; `initial_only` runs once. Create-only.",
    )
    file_filters: FileFiltersSpec | None = Field(
        default=None, description="Which files to sync; all set filters must match. Create-only."
    )
    schema_mapping: SchemaMappingSpec | None = Field(
        default=None,
        description=(
            "Maps source values to bucket fields and blobs. Unset: the provider default "
            "(file -> `content` blob)."
        ),
    )
    polling_interval_seconds: int = Field(
        default=POLLING_INTERVAL_DEFAULT,
        ge=POLLING_INTERVAL_MIN,
        le=POLLING_INTERVAL_MAX,
        description="Seconds between polls in continuous mode.",
    )
    batch_size: int = Field(
        default=BATCH_SIZE_DEFAULT, ge=BATCH_SIZE_MIN, le=BATCH_SIZE_MAX, description="Files per sync batch."
    )
    skip_batch_submission: bool = Field(
        default=False,
        description=(
            "Create objects in the bucket but never create or submit batches (no collection processing)."
        ),
    )
    metadata: dict[str, Annotated[str, Field(max_length=METADATA_VALUE_MAX_LENGTH)]] | None = Field(
        default=None,
        max_length=USER_METADATA_MAX_KEYS,
        description=(
            f"Free-form string metadata on the remote sync (at most {USER_METADATA_MAX_KEYS} keys: Mixpeek "
            f"allows {METADATA_MAX_KEYS} and the operator's ownership marker uses the rest). Keys starting "
            f"with `{RESERVED_METADATA_PREFIX}` are reserved."
        ),
        json_schema_extra=validations(
            cel(
                f"self.all(k, !k.startsWith('{RESERVED_METADATA_PREFIX}'))",
                f"spec.metadata keys must not start with the reserved prefix '{RESERVED_METADATA_PREFIX}' "
                "(used by the operator's ownership marker)",
                reason="FieldValueForbidden",
            )
        ),
    )
    paused: bool = Field(default=False, description="Pause the remote sync (true) or resume it (false).")
    sync_config_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=ID_MAX_LENGTH,
        description="Adopt this existing remote sync instead of creating one. Immutable.",
    )
    credentials_ref: CredentialsRef | None = Field(
        default=None,
        description="Secret with the Mixpeek API key. Unset: the operator-wide default Secret.",
    )
    mixpeek_namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=ID_MAX_LENGTH,
        description=(
            "Mixpeek namespace (X-Namespace header); overrides the Secret's `namespace`. Create-only."
        ),
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE,
        description="On deletion of this object: `Delete` the remote sync or `Orphan` (keep) it.",
    )
    management_policy: ManagementPolicy = Field(
        default=ManagementPolicy.FULL,
        description=(
            "`Full` manages the remote sync; `ObserveOnly` never writes remotely (needs syncConfigId)."
        ),
    )
    replacement_policy: ReplacementPolicy = Field(
        default=ReplacementPolicy.RECREATE,
        description=(
            "What a change to a create-only field does: `Recreate` deletes the remote sync and creates "
            "a new one; `Reject` refuses the edit at admission."
        ),
    )


# --- status ---------------------------------------------------------------------------------


class _StatusModel(BaseModel):
    # Tolerant: a status written by a newer operator version must still parse.
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )


class Condition(_StatusModel):
    """One observation of the object's state (metav1.Condition shape)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="Ready, Reconciling, Stalled, RemoteHealthy or ReconcilePaused.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, max_length=1024, description="CamelCase reason for the status.")
    message: str | None = Field(
        default=None, max_length=CONDITION_MESSAGE_MAX_LENGTH, description="Human-readable details."
    )
    last_transition_time: datetime | None = Field(default=None, description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this condition was computed for."
    )


class RemoteStatus(_StatusModel):
    """The remote sync as Mixpeek last reported it."""

    # A plain string, not an enum: a status value Mixpeek adds later must not make our
    # status patch invalid.
    status: str | None = Field(default=None, max_length=64, description="Mixpeek task status, e.g. ACTIVE.")
    is_active: bool | None = Field(default=None, description="Whether Mixpeek considers the sync active.")
    paused: bool | None = Field(default=None, description="Whether the sync is paused remotely.")
    last_sync_at: datetime | None = Field(default=None, description="End of the last successful run.")
    next_sync_at: datetime | None = Field(default=None, description="Next scheduled run.")
    consecutive_failures: int | None = Field(default=None, ge=0, description="Failures in a row.")
    sync_run_counter: int | None = Field(default=None, ge=0, description="Runs executed so far.")
    last_error: str | None = Field(
        default=None, max_length=LAST_ERROR_MAX_LENGTH, description="Mixpeek's most recent error message."
    )


class SyncMetrics(_StatusModel):
    """Cumulative counters of the remote sync."""

    files_discovered: int | None = Field(default=None, ge=0, description="Files found across runs.")
    files_synced: int | None = Field(default=None, ge=0, description="Files synced successfully.")
    files_failed: int | None = Field(default=None, ge=0, description="Files that failed after retries.")
    bytes_synced: int | None = Field(default=None, ge=0, description="Bytes synced.")
    batches_created: int | None = Field(default=None, ge=0, description="Batches created.")


class DriftEntry(_StatusModel):
    """A remote value that differs from the spec."""

    field: str = Field(max_length=256, description="Spec path of the field, e.g. spec.batchSize.")
    desired: str | None = Field(
        default=None, max_length=DRIFT_VALUE_MAX_LENGTH, description="Desired value, JSON-encoded."
    )
    observed: str | None = Field(
        default=None, max_length=DRIFT_VALUE_MAX_LENGTH, description="Remote value, JSON-encoded."
    )


class BucketSyncStatus(_StatusModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(
        default=None,
        description="Last metadata.generation that reached Ready or Stalled; -1 until first handled.",
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=CONDITIONS_MAX_ITEMS,
        description="Ready, Reconciling, Stalled, RemoteHealthy and ReconcilePaused.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    sync_config_id: str | None = Field(
        default=None,
        max_length=ID_MAX_LENGTH,
        description="Id of the remote sync, written as soon as it is known.",
    )
    bucket_id: str | None = Field(
        default=None, max_length=ID_MAX_LENGTH, description="Bucket the remote sync currently lives in."
    )
    mixpeek_namespace: str | None = Field(
        default=None,
        max_length=ID_MAX_LENGTH,
        description="Mixpeek namespace the remote sync currently lives in.",
    )
    remote: RemoteStatus | None = Field(default=None, description="The remote sync as last observed.")
    metrics: SyncMetrics | None = Field(default=None, description="Cumulative counters of the remote sync.")
    drift: list[DriftEntry] | None = Field(
        default=None, max_length=DRIFT_MAX_ITEMS, description="Remote values that differ from the spec."
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        max_length=256,
        description="Last handled value of the mixpeek.com/reconcile-requested-at annotation.",
    )
    last_handled_trigger_at: str | None = Field(
        default=None,
        max_length=256,
        description="Last handled value of the mixpeek.com/trigger-requested-at annotation.",
    )
    credentials_fingerprint: str | None = Field(
        default=None,
        max_length=128,
        description="Hash of the referenced Secret's data (never the data itself).",
    )
