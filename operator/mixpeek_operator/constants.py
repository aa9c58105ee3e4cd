"""Names shared by every layer: API group, annotations, finalizer, condition types and reasons."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "mixpeek.com"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "BucketSync"
PLURAL: Final = "bucketsyncs"
SINGULAR: Final = "bucketsync"
SHORT_NAME: Final = "bsync"
CATEGORY: Final = "mixpeek"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

ANNOTATION_PREFIX: Final = f"{GROUP}/"
FINALIZER: Final = f"{GROUP}/finalizer"
RECONCILE_REQUESTED_AT: Final = f"{GROUP}/reconcile-requested-at"
TRIGGER_REQUESTED_AT: Final = f"{GROUP}/trigger-requested-at"
RECONCILE_PAUSED: Final = f"{GROUP}/reconcile-paused"

# Keys under this prefix in the remote sync's `metadata` belong to the operator (ownership
# marker); users may not set them (a CEL rule refuses them at admission).
RESERVED_METADATA_PREFIX: Final = "mixpeek-operator."
OWNER_UID_KEY: Final = f"{RESERVED_METADATA_PREFIX}uid"
OWNER_REF_KEY: Final = f"{RESERVED_METADATA_PREFIX}object"
OWNER_CLUSTER_KEY: Final = f"{RESERVED_METADATA_PREFIX}cluster"

# Keys of the credentials Secret.
SECRET_API_KEY: Final = "apiKey"
SECRET_NAMESPACE: Final = "namespace"
SECRET_BASE_URL: Final = "baseUrl"

DEFAULT_MIXPEEK_BASE_URL: Final = "https://api.mixpeek.com"


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    REMOTE_HEALTHY = "RemoteHealthy"
    RECONCILE_PAUSED = "ReconcilePaused"


class Reason(StrEnum):
    SYNCED = "Synced"
    PAUSED = "Paused"
    DELETING = "Deleting"
    PROGRESSING_WITH_RETRY = "ProgressingWithRetry"
    RATE_LIMITED = "RateLimited"
    INVALID_SPEC = "InvalidSpec"
    AUTH_FAILED = "AuthFailed"
    SECRET_NOT_FOUND = "SecretNotFound"
    OWNERSHIP_CONFLICT = "OwnershipConflict"
    REMOTE_NOT_FOUND = "RemoteNotFound"
    RECONCILE_PAUSED = "ReconcilePaused"
    ACTIVE = "Active"
    REMOTE_FAILED = "RemoteFailed"
    AUTO_SUSPENDED = "AutoSuspended"
