"""Emulator configuration: fixed settings plus the behaviours tests may flip at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mixpeek_operator.emulator.seed import DEFAULT_SEED, Seed
from mixpeek_operator.mixpeek.models import LIST_LIMIT_MAX, LIST_LIMIT_MIN

ValidationErrorShape = Literal["envelope", "fastapi"]


class Behaviour(BaseModel):
    """Choices where the reference is UNCONFIRMED; `PATCH /_emulator/behaviour` changes them live."""

    model_config = ConfigDict(extra="forbid")

    strict: bool = Field(
        default=False, description="Reject unknown body keys, and create-only keys in PATCH, with 422."
    )
    missing_namespace_status: Literal[400, 401, 403, 404, 422] = Field(
        default=400, description="Status for a request without X-Namespace."
    )
    forbidden_namespace_status: Literal[403, 404] = Field(
        default=403, description="Status for a namespace that exists but the key may not use."
    )
    trigger_when_paused: Literal["noop", "conflict"] = Field(
        default="noop", description="Trigger on a paused/inactive/locked sync: 200 no-op, or 409."
    )
    pause_deactivates: bool = Field(
        default=True, description="Pause also sets is_active=false and status=SUSPENDED (resume undoes it)."
    )
    auto_suspend_after: int | None = Field(
        default=5, ge=1, description="Consecutive failures that auto-suspend a sync; null disables it."
    )
    initial_run_delay_seconds: float = Field(
        default=5.0, ge=0, description="Emulated seconds between create and the first scheduled run."
    )
    default_list_limit: int = Field(default=10, ge=LIST_LIMIT_MIN, le=LIST_LIMIT_MAX)
    max_catch_up_runs: int = Field(
        default=100, ge=1, description="Missed slots of one sync run per evaluation before skipping ahead."
    )


class EmulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: Seed = Field(default=DEFAULT_SEED)
    state_file: Path | None = Field(default=None, description="JSON file the syncs persist to.")
    time_scale: float = Field(
        default=1.0, ge=0, description="Emulated seconds per real second; 0 freezes the clock."
    )
    start_time: AwareDatetime | None = Field(
        default=None, description="Emulated start instant (default now)."
    )
    validation_errors: ValidationErrorShape = "envelope"
    behaviour: Behaviour = Field(default_factory=Behaviour)
    request_log_size: int = Field(default=1000, ge=0)
    random_seed: int | None = Field(default=None, description="Seed of the fault-injection dice.")
