"""Seed data: the API keys, namespaces, buckets and connections the emulator starts with.

The seed is read-only at run time (Mixpeek manages these through other APIs); only sync
configurations are created, changed and persisted by the emulator.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

SEED_BASE_DIR = "base_dir"  # validation-context key: relative connection roots resolve against it


class StorageProvider(StrEnum):
    """The connection-level provider enum of the API (reference §4.5)."""

    GOOGLE_DRIVE = "google_drive"
    S3 = "s3"
    SNOWFLAKE = "snowflake"
    SHAREPOINT = "sharepoint"
    TIGRIS = "tigris"
    POSTGRESQL = "postgresql"


# Providers the sync docs name; a sync on any other connection is refused with 400.
SYNC_PROVIDERS = frozenset(StorageProvider) - {StorageProvider.POSTGRESQL}


class _SeedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKeySeed(_SeedModel):
    key: str = Field(min_length=1, description="The secret sent as `Authorization: Bearer <key>`.")
    user_id: str = Field(min_length=1, description="Becomes `created_by_user_id` / `paused_by_user_id`.")
    internal_id: str = Field(min_length=1, description="Organization id; becomes `internal_id`.")
    namespaces: list[str] | None = Field(
        default=None, description="Namespace ids or names this key may use; null means every namespace."
    )


class BucketSeed(_SeedModel):
    id: str = Field(min_length=1)
    name: str | None = None


class ConnectionSeed(_SeedModel):
    id: str = Field(min_length=1)
    provider: StorageProvider
    name: str | None = None
    root: Path | None = Field(
        default=None,
        description="Local folder that stands in for the provider; a sync walks root/source_path. "
        "Relative paths resolve against the seed file's folder. Without it, runs see a synthetic listing.",
    )

    @field_validator("root")
    @classmethod
    def _resolve_root(cls, root: Path | None, info: ValidationInfo) -> Path | None:
        if root is None:
            return None
        base = (info.context or {}).get(SEED_BASE_DIR)
        root = root.expanduser()
        if not root.is_absolute() and base is not None:
            root = Path(base) / root
        return root.resolve()


class NamespaceSeed(_SeedModel):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    buckets: list[BucketSeed] = Field(default_factory=list)
    connections: list[ConnectionSeed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_children(self) -> NamespaceSeed:
        _require_unique((b.id for b in self.buckets), f"bucket id in namespace {self.id}")
        _require_unique((c.id for c in self.connections), f"connection id in namespace {self.id}")
        return self


class Seed(_SeedModel):
    api_keys: list[ApiKeySeed] = Field(min_length=1)
    namespaces: list[NamespaceSeed] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Seed:
        _require_unique((k.key for k in self.api_keys), "api key")
        _require_unique((n.id for n in self.namespaces), "namespace id")
        _require_unique((n.name for n in self.namespaces), "namespace name")
        known = {n.id for n in self.namespaces} | {n.name for n in self.namespaces}
        for api_key in self.api_keys:
            unknown = sorted(set(api_key.namespaces or ()) - known)
            if unknown:
                raise ValueError(f"api key for user {api_key.user_id} names unknown namespaces {unknown}")
        return self


def _require_unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what}: {value!r}")
        seen.add(value)


DEFAULT_API_KEY = "sk_test_emulator"

DEFAULT_SEED = Seed(
    api_keys=[ApiKeySeed(key=DEFAULT_API_KEY, user_id="usr_emulator", internal_id="org_emulator")],
    namespaces=[
        NamespaceSeed(
            id="ns_emulator",
            name="default",
            buckets=[BucketSeed(id="bkt_demo", name="demo"), BucketSeed(id="bkt_media", name="media")],
            connections=[
                ConnectionSeed(id="conn_s3_demo", provider=StorageProvider.S3, name="demo S3"),
                ConnectionSeed(
                    id="conn_gdrive_demo", provider=StorageProvider.GOOGLE_DRIVE, name="demo Drive"
                ),
            ],
        )
    ],
)


def load_seed(path: Path) -> Seed:
    """Read a seed from YAML or JSON (JSON is valid YAML); relative roots resolve against its folder."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Seed.model_validate(data, context={SEED_BASE_DIR: path.resolve().parent})
