"""A stored sync (the public model plus emulator-only bookkeeping) and the state file that keeps them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mixpeek_operator.mixpeek.models import SyncConfiguration

STATE_FILE_VERSION = 1


@dataclass(slots=True)
class SyncRecord:
    config: SyncConfiguration
    seq: int  # creation order; breaks created_at ties when listing newest first
    # Incremental watermark in the source's own clock: the newest mtime synced so far.
    source_watermark_ns: int | None = None
    failing_runs: int = 0  # armed by the admin API: the next N runs fail with failing_message
    failing_message: str = ""
    _json: str | None = field(default=None, repr=False)

    @property
    def sync_id(self) -> str:
        return self.config.sync_config_id or ""

    def changed(self) -> None:
        """Call after every mutation: drops the cached JSON."""
        self._json = None

    def to_json(self) -> str:
        if self._json is None:
            self._json = self.config.model_dump_json()
        return self._json

    def state_json(self) -> str:
        bookkeeping = json.dumps(
            {
                "seq": self.seq,
                "source_watermark_ns": self.source_watermark_ns,
                "failing_runs": self.failing_runs,
                "failing_message": self.failing_message,
            }
        )
        return f'{bookkeeping[:-1]},"config":{self.to_json()}}}'

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> SyncRecord:
        return cls(
            config=SyncConfiguration.model_validate(data["config"]),
            seq=int(data["seq"]),
            source_watermark_ns=data.get("source_watermark_ns"),
            failing_runs=int(data.get("failing_runs", 0)),
            failing_message=str(data.get("failing_message", "")),
        )


def records_json(records: list[SyncRecord]) -> str:
    """A JSON array of the records' public models, from their cached JSON."""
    return f"[{','.join(record.to_json() for record in records)}]"


@dataclass(slots=True)
class SavedState:
    clock: datetime
    next_seq: int
    records: list[SyncRecord]


def save_state(path: Path, clock: datetime, next_seq: int, records: list[SyncRecord]) -> None:
    """Rewrite the whole file atomically (temp file + rename); per-sync JSON is cached, so this is a join."""
    header = json.dumps({"version": STATE_FILE_VERSION, "clock": clock.isoformat(), "next_seq": next_seq})
    text = f'{header[:-1]},"syncs":[{",".join(r.state_json() for r in records)}]}}'
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def load_state(path: Path) -> SavedState:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != STATE_FILE_VERSION:
        raise ValueError(f"{path}: unsupported state file version {data.get('version')!r}")
    return SavedState(
        clock=datetime.fromisoformat(data["clock"]),
        next_seq=int(data["next_seq"]),
        records=[SyncRecord.from_state(item) for item in data["syncs"]],
    )
