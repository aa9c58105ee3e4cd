"""Pydantic models of the Mixpeek bucket-sync API (the V2 surface of the reference).

Request models refuse values outside the documented bounds, so a bad value fails
before it leaves the process; they ignore unknown keys the way the server does.
Response models accept unknown fields, so a newer server never breaks an older client.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Bounds documented by the API (reference §3).
POLLING_INTERVAL_MIN = 30
POLLING_INTERVAL_MAX = 900
POLLING_INTERVAL_DEFAULT = 300
BATCH_SIZE_MIN = 1
BATCH_SIZE_MAX = 100
BATCH_SIZE_DEFAULT = 50
METADATA_MAX_KEYS = 50
LAST_ERROR_MAX_LENGTH = 1000
DESCRIPTION_MAX_LENGTH = 500
LIST_LIMIT_MIN = 1
LIST_LIMIT_MAX = 1000
LIST_OFFSET_MAX = 10000
TAG_KEY_MAX_LENGTH = 128
METADATA_KEY_MAX_LENGTH = 1024


class SyncMode(StrEnum):
    INITIAL_ONLY = "initial_only"
    CONTINUOUS = "continuous"


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"
    SKIPPED = "SKIPPED"
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"
    SUSPENDED = "SUSPENDED"


class BlobType(StrEnum):
    AUTO = "auto"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    TEXT = "text"
    PDF = "pdf"
    EXCEL = "excel"


class FieldTransform(StrEnum):
    LOWERCASE = "lowercase"
    UPPERCASE = "uppercase"
    TRIM = "trim"
    JSON_PARSE = "json_parse"


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- file filters -----------------------------------------------------------------------


class FileFilters(BaseModel):
    """Which files a sync picks up; every set field must match (AND)."""

    # Unknown keys (for example 0.82's `metadata_filters`) are kept, not dropped.
    model_config = ConfigDict(extra="allow")

    include_patterns: list[str] | None = None
    exclude_patterns: list[str] | None = None
    min_size_bytes: Annotated[int, Field(ge=0)] | None = None
    max_size_bytes: Annotated[int, Field(ge=0)] | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    mime_types: list[str] | None = None


# --- schema mapping ---------------------------------------------------------------------


class TagSource(BaseModel):
    type: Literal["tag"] = "tag"
    key: Annotated[str, Field(min_length=1, max_length=TAG_KEY_MAX_LENGTH)]


class MetadataSource(BaseModel):
    type: Literal["metadata"] = "metadata"
    key: Annotated[str, Field(min_length=1, max_length=METADATA_KEY_MAX_LENGTH)]


class FilenameRegexSource(BaseModel):
    type: Literal["filename_regex"] = "filename_regex"
    pattern: Annotated[str, Field(min_length=1)]
    default: str | None = None

    @field_validator("pattern")
    @classmethod
    def _exactly_one_group(cls, pattern: str) -> str:
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        if groups != 1:
            raise ValueError(f"pattern must have exactly one capture group, found {groups}")
        return pattern


class ColumnSource(BaseModel):
    type: Literal["column"] = "column"
    name: Annotated[str, Field(min_length=1)]


class DrivePropertySource(BaseModel):
    type: Literal["drive_property"] = "drive_property"
    key: Annotated[str, Field(min_length=1)]


class FolderPathSource(BaseModel):
    type: Literal["folder_path"] = "folder_path"
    segment: int | None = None
    full_path: bool = False


class FileSource(BaseModel):
    type: Literal["file"] = "file"


class ConstantSource(BaseModel):
    type: Literal["constant"] = "constant"
    value: Any


Source = Annotated[
    TagSource
    | MetadataSource
    | FilenameRegexSource
    | ColumnSource
    | DrivePropertySource
    | FolderPathSource
    | FileSource
    | ConstantSource,
    Field(discriminator="type"),
]


class FieldMappingEntry(BaseModel):
    target_type: Literal["field"] = "field"
    source: Source
    transform: FieldTransform | None = None
    required: bool = False

    @field_validator("source")
    @classmethod
    def _no_file_source(cls, source: Any) -> Any:
        if isinstance(source, FileSource):
            raise ValueError("source type 'file' is only valid for blob mappings")
        return source


class BlobMappingEntry(BaseModel):
    target_type: Literal["blob"] = "blob"
    source: Source
    blob_type: BlobType = BlobType.AUTO
    blob_property: Annotated[str, Field(min_length=1)] = "content"
    mime_type_override: str | None = None


MappingEntry = Annotated[FieldMappingEntry | BlobMappingEntry, Field(discriminator="target_type")]


class SchemaMapping(BaseModel):
    mappings: dict[str, MappingEntry]


# --- requests ---------------------------------------------------------------------------

Metadata = Annotated[dict[str, Any], Field(max_length=METADATA_MAX_KEYS)]


class SyncCreateRequest(_Request):
    connection_id: str
    source_path: str
    sync_mode: SyncMode = SyncMode.CONTINUOUS
    file_filters: FileFilters | None = None
    schema_mapping: SchemaMapping | None = None
    polling_interval_seconds: Annotated[int, Field(ge=POLLING_INTERVAL_MIN, le=POLLING_INTERVAL_MAX)] = (
        POLLING_INTERVAL_DEFAULT
    )
    batch_size: Annotated[int, Field(ge=BATCH_SIZE_MIN, le=BATCH_SIZE_MAX)] = BATCH_SIZE_DEFAULT
    skip_batch_submission: bool = False
    metadata: Metadata | None = None


class SyncUpdateRequest(_Request):
    """PATCH body: only the fields that are set are sent (and changed)."""

    description: Annotated[str, Field(max_length=DESCRIPTION_MAX_LENGTH)] | None = None
    metadata: Metadata | None = None
    status: TaskStatus | None = None
    is_active: bool | None = None
    polling_interval_seconds: (
        Annotated[int, Field(ge=POLLING_INTERVAL_MIN, le=POLLING_INTERVAL_MAX)] | None
    ) = None
    batch_size: Annotated[int, Field(ge=BATCH_SIZE_MIN, le=BATCH_SIZE_MAX)] | None = None
    schema_mapping: SchemaMapping | None = None
    skip_batch_submission: bool | None = None


class ListSyncConfigurationsRequest(_Request):
    connection_id: str | None = None
    status: TaskStatus | None = None
    is_active: bool | None = None


# --- responses --------------------------------------------------------------------------


class SyncConfiguration(_Response):
    """`SyncConfigurationModel`: the remote sync, all 48 V2 fields."""

    sync_config_id: str | None = None
    bucket_id: str
    connection_id: str
    internal_id: str
    namespace_id: str
    source_path: str
    file_filters: FileFilters | None = None
    schema_mapping: SchemaMapping | None = None
    sync_mode: SyncMode = SyncMode.CONTINUOUS
    polling_interval_seconds: int = POLLING_INTERVAL_DEFAULT
    batch_size: int = BATCH_SIZE_DEFAULT
    create_object_on_confirm: bool = True
    skip_duplicates: bool = True
    skip_batch_submission: bool = False
    status: TaskStatus = TaskStatus.PENDING
    is_active: bool = True
    total_files_discovered: int = 0
    total_files_synced: int = 0
    total_files_failed: int = 0
    total_bytes_synced: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_sync_at: datetime | None = None
    next_sync_at: datetime | None = None
    created_by_user_id: str
    last_error: str | None = None
    consecutive_failures: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    locked_by_worker_id: str | None = None
    locked_at: datetime | None = None
    lock_expires_at: datetime | None = None
    paused: bool = False
    pause_reason: str | None = None
    paused_at: datetime | None = None
    paused_by_user_id: str | None = None
    max_objects_per_run: int = 100000
    max_batch_chunk_size: int = 1000
    batch_chunk_size: int = 100
    current_sync_run_id: str | None = None
    sync_run_counter: int = 0
    batch_ids: list[str] = Field(default_factory=list)
    task_ids: list[str] = Field(default_factory=list)
    batches_created: int = 0
    resume_enabled: bool = True
    resume_cursor: str | None = None
    resume_last_primary_key: str | None = None
    resume_objects_processed: int = 0
    resume_checkpoint_frequency: int = 1000


class PaginationResponse(_Response):
    total: int | None = None
    page: int | None = None
    page_size: int | None = None
    total_pages: int | None = None
    next_page: str | None = None
    previous_page: str | None = None
    next_cursor: str | None = None


class SyncListResponse(_Response):
    results: list[SyncConfiguration]
    pagination: PaginationResponse = Field(default_factory=PaginationResponse)
    total: int | None = None


class TriggerResponse(_Response):
    sync_job_id: str | None = None


class DeleteResponse(_Response):
    """The delete body is untyped in the spec; whatever the server sends is kept."""


class ErrorBody(_Response):
    type: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(_Response):
    success: bool = False
    status: int
    error: ErrorBody


class ValidationErrorItem(_Response):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(_Response):
    detail: list[ValidationErrorItem]
