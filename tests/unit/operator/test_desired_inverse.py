"""desired.spec_from_remote: the inverse of the create/patch mapping (`kubectl mixpeek import`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import DeletionPolicy
from mixpeek_operator.constants import OWNER_CLUSTER_KEY, OWNER_REF_KEY, OWNER_UID_KEY
from tests.unit.operator.test_desired import FULL, MINIMAL, OWNER, served, spec_of

# Fields a spec carries that the remote sync does not (they come from the import's flags).
LOCAL_FIELDS = {"sync_config_id", "credentials_ref", "mixpeek_namespace", "deletion_policy"}


PAUSED_WITH_METADATA = {**MINIMAL, "paused": True, "metadata": {"owner": "team-a", "cost-center": "42"}}
BLOB_DEFAULTS_SPELLED_OUT = {
    **MINIMAL,
    "schemaMapping": {
        "mappings": {
            "content": {
                "targetType": "blob",
                "source": {"type": "file"},
                "blobType": "auto",
                "blobProperty": "content",
            },
            "folder": {"source": {"type": "folder_path", "fullPath": False}, "required": False},
            "nothing": {"source": {"type": "constant", "value": 0}},
        }
    },
}


@pytest.mark.parametrize(
    "raw",
    [MINIMAL, FULL, PAUSED_WITH_METADATA, BLOB_DEFAULTS_SPELLED_OUT],
    ids=["minimal", "full", "paused-metadata", "defaults-spelled-out"],
)
def test_spec_to_remote_to_spec_keeps_every_remote_value(raw: dict[str, Any]) -> None:
    spec = spec_of(raw)
    remote = served(desired.create_request(spec, OWNER), paused=spec.paused)

    back = desired.spec_from_remote(remote)

    # Every remote value survives: the reconciler's own comparisons see nothing to do.
    assert desired.create_only_differences(back, remote) == []
    assert desired.drift(back, OWNER, remote) == []
    assert desired.patch_for(back, OWNER, remote) is None
    assert desired.pause_action(back, remote) is None
    assert back.sync_config_id == "sync_abc"
    # The same spec, field for field, except what import adds and what only normalises
    # (an empty pattern list is an unset one; defaults the API fills in are left out).
    assert back.model_dump(exclude=LOCAL_FIELDS) == spec_of(_without_noise(raw)).model_dump(
        exclude=LOCAL_FIELDS
    )


def _without_noise(raw: dict[str, Any]) -> dict[str, Any]:
    clean = json.loads(json.dumps(raw))
    filters = clean.get("fileFilters") or {}
    for key in [k for k, v in filters.items() if v == []]:
        del filters[key]
    if "modifiedBefore" in filters:  # compared as instants; the inverse writes UTC
        filters["modifiedBefore"] = "2025-06-01T10:30:00.250Z"
    for entry in (clean.get("schemaMapping") or {}).get("mappings", {}).values():
        for key, default in (("blobType", "auto"), ("blobProperty", "content"), ("required", False)):
            if entry.get(key) == default:
                del entry[key]
        if entry["source"].get("fullPath") is False:
            del entry["source"]["fullPath"]
    return clean


@pytest.mark.parametrize("raw", [MINIMAL, FULL, PAUSED_WITH_METADATA], ids=["minimal", "full", "paused"])
def test_remote_to_spec_to_remote_changes_nothing_but_the_marker(raw: dict[str, Any]) -> None:
    request = desired.create_request(spec_of(raw), {})
    filters = request.model_dump(mode="json", exclude_none=True).get("file_filters", {})
    unowned = served(
        request,
        paused=bool(raw.get("paused")),
        # Unknown filter keys of a newer server are not the spec's (the operator ignores them).
        file_filters={**filters, "metadata_filters": {"a": 1}},
    )

    spec = desired.spec_from_remote(unowned, credentials_ref="creds")

    assert desired.create_only_differences(spec, unowned) == []
    assert spec.paused == unowned.paused
    update = desired.patch_for(spec, OWNER, unowned)
    # Adopting writes the marker and nothing else: the PATCH carries metadata only,
    # the user's keys unchanged.
    assert update is not None
    assert update.model_dump(exclude_unset=True) == {"metadata": {**unowned.metadata, **OWNER}}
    owned = served(desired.create_request(spec, OWNER), paused=spec.paused)
    assert desired.drift(spec, OWNER, owned) == []
    assert desired.patch_for(spec, OWNER, owned) is None


def test_reserved_metadata_keys_are_stripped() -> None:
    remote = served(
        desired.create_request(spec_of(MINIMAL), {}),
        metadata={"team": "a", OWNER_UID_KEY: "u", OWNER_REF_KEY: "x/y", OWNER_CLUSTER_KEY: "c"},
    )
    assert desired.spec_from_remote(remote).metadata == {"team": "a"}
    only_marker = served(desired.create_request(spec_of(MINIMAL), {}), metadata={OWNER_UID_KEY: "u"})
    assert desired.spec_from_remote(only_marker).metadata is None


def test_import_flags_land_in_the_spec() -> None:
    remote = served(desired.create_request(spec_of(MINIMAL), {}))
    spec = desired.spec_from_remote(
        remote, credentials_ref="creds", mixpeek_namespace="ns-x", deletion_policy=DeletionPolicy.ORPHAN
    )
    assert spec.credentials_ref is not None
    assert spec.credentials_ref.name == "creds"
    assert (spec.mixpeek_namespace, spec.deletion_policy) == ("ns-x", DeletionPolicy.ORPHAN)


def test_a_value_a_spec_cannot_hold_is_a_clear_error() -> None:
    remote = served(desired.create_request(spec_of(MINIMAL), {}), metadata={"count": 3})
    with pytest.raises(desired.SpecConversionError, match="metadata key 'count' holds a int"):
        desired.spec_from_remote(remote)
