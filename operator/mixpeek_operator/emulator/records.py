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


# A journal shorter than this is never folded into the snapshot (small states stay cheap too).
_COMPACT_MIN_ENTRIES = 1000


class StateFile:
    """The state file (a snapshot, rewritten atomically) and its journal (`<file>.journal`).

    Every change is appended to the journal before the request is answered, so it survives a
    crash of the emulator like a snapshot rewrite did, at the cost of the changed records only;
    rewriting the whole file on each change made a bulk create quadratic. The journal is folded
    into the snapshot when it has more entries than there are syncs (amortised O(1) per change).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path.with_name(f"{path.name}.journal")
        self._entries = 0

    def load(self) -> SavedState | None:
        """The snapshot with the journal replayed on it; None when neither exists."""
        saved = load_state(self.path) if self.path.exists() else None
        if not self.journal.exists():
            return saved
        records = {r.sync_id: r for r in saved.records} if saved else {}
        clock, next_seq = (saved.clock, saved.next_seq) if saved else (None, 1)
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a line torn by a crash mid-write: the change it held was never answered
            for item in entry.get("put", []):
                record = SyncRecord.from_state(item)
                records[record.sync_id] = record
            for sync_id in entry.get("delete", []):
                records.pop(sync_id, None)
            entry_clock = datetime.fromisoformat(entry["clock"])
            clock = entry_clock if clock is None else max(clock, entry_clock)
            next_seq = max(next_seq, int(entry["next_seq"]))
            self._entries += 1
        if clock is None:
            return None
        return SavedState(clock=clock, next_seq=next_seq, records=list(records.values()))

    def record(
        self, clock: datetime, next_seq: int, changed: list[SyncRecord], deleted: list[str], total: int
    ) -> bool:
        """Append one change; True when the journal has grown enough to be folded (`snapshot`)."""
        header = json.dumps({"clock": clock.isoformat(), "next_seq": next_seq, "delete": deleted})
        line = f'{header[:-1]},"put":[{",".join(r.state_json() for r in changed)}]}}\n'
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.journal.open("a", encoding="utf-8") as journal:
            journal.write(line)
        self._entries += 1
        return self._entries > max(_COMPACT_MIN_ENTRIES, total)

    def snapshot(self, clock: datetime, next_seq: int, records: list[SyncRecord]) -> None:
        """Fold everything into the snapshot; a crash between the two steps replays a journal the
        snapshot already holds, which changes nothing."""
        save_state(self.path, clock, next_seq, records)
        self.journal.unlink(missing_ok=True)
        self._entries = 0
