"""What a sync run sees at its source: a real local folder or a fixed synthetic listing, after file_filters.

Filter semantics (documented in docs/emulator.md):
- `include_patterns` / `exclude_patterns`: case-sensitive `fnmatch` globs (`*` also crosses `/`),
  tried against the file's path relative to the walked folder AND against its bare name; a file
  is included when any include pattern hits (no patterns = everything) and dropped when any
  exclude pattern hits.
- `min_size_bytes` / `max_size_bytes`: inclusive.
- `modified_after` / `modified_before`: strict, against the file's mtime; naive values are UTC.
- `mime_types`: case-insensitive globs (`video/*`) against the type Python's built-in table
  guesses from the name (`application/octet-stream` when unknown).
"""

from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path

from mixpeek_operator.mixpeek.models import FileFilters

UNKNOWN_MIME_TYPE = "application/octet-stream"
# Built-in table only: the system's /etc/mime.types would make results differ between machines.
_MIME_TABLE = mimetypes.MimeTypes()
_EPOCH = datetime(1970, 1, 1)


class SourceError(Exception):
    """The source cannot be listed; the run fails with this message as last_error."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # POSIX path relative to the listed folder
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def guess_mime_type(name: str) -> str:
    return _MIME_TABLE.guess_type(name)[0] or UNKNOWN_MIME_TYPE


def to_epoch_ns(instant: datetime) -> int:
    """Nanoseconds since the epoch, in integer arithmetic so extreme offsets cannot overflow."""
    offset = instant.utcoffset() or timedelta(0)
    return ((instant.replace(tzinfo=None) - _EPOCH - offset) // timedelta(microseconds=1)) * 1000


def list_local_folder(root: Path, source_path: str) -> list[SourceFile]:
    """Every regular file under root/source_path (leading '/' stripped), recursively, sorted by path."""
    folder = (root / source_path.lstrip("/")).resolve()
    if not folder.is_relative_to(root.resolve()):
        raise SourceError(f"source_path {source_path!r} escapes the connection's folder")
    if not folder.is_dir():
        raise SourceError(f"source_path {source_path!r} not found in the provider")
    files: list[SourceFile] = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            full = Path(dirpath, filename)
            try:
                info = full.stat()
            except OSError:  # vanished since the walk, or a dangling symlink
                continue
            if stat.S_ISREG(info.st_mode):
                files.append(SourceFile(full.relative_to(folder).as_posix(), info.st_size, info.st_mtime_ns))
    files.sort(key=lambda f: f.path)
    return files


def _synthetic(index: int, path: str, size: int) -> SourceFile:
    mtime = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=index)
    return SourceFile(path, size, to_epoch_ns(mtime))


# The listing of every connection without a local `root`: the same 12 files (19,886,080 bytes)
# whatever the source_path, with mtimes 2025-01-01T00:00Z + i hours.
SYNTHETIC_FILES: tuple[SourceFile, ...] = tuple(
    _synthetic(i, path, size)
    for i, (path, size) in enumerate(
        [
            ("videos/launch-teaser.mp4", 4_194_304),
            ("videos/product-demo.mov", 8_388_608),
            ("videos/drafts/rough-cut.mp4", 2_097_152),
            ("images/hero.jpg", 524_288),
            ("images/logo.png", 65_536),
            ("images/team-photo.jpg", 1_048_576),
            ("docs/brochure.pdf", 262_144),
            ("docs/release-notes.txt", 4_096),
            ("docs/pricing.csv", 8_192),
            ("audio/podcast-episode-1.mp3", 3_145_728),
            ("audio/jingle.wav", 131_072),
            ("data/catalog.json", 16_384),
        ]
    )
)


def list_source(root: Path | None, source_path: str) -> list[SourceFile]:
    return list(SYNTHETIC_FILES) if root is None else list_local_folder(root, source_path)


class FileSelector:
    """`file_filters` compiled once per run; `matches` is the AND of every set filter."""

    def __init__(self, filters: FileFilters | None) -> None:
        filters = filters or FileFilters()
        self._include = filters.include_patterns or []
        self._exclude = filters.exclude_patterns or []
        self._min_size = filters.min_size_bytes
        self._max_size = filters.max_size_bytes
        self._after_ns = to_epoch_ns(filters.modified_after) if filters.modified_after else None
        self._before_ns = to_epoch_ns(filters.modified_before) if filters.modified_before else None
        self._mime_types = [pattern.lower() for pattern in filters.mime_types or []]

    def matches(self, file: SourceFile) -> bool:
        if self._include and not _glob_hit(self._include, file):
            return False
        if self._exclude and _glob_hit(self._exclude, file):
            return False
        if self._min_size is not None and file.size < self._min_size:
            return False
        if self._max_size is not None and file.size > self._max_size:
            return False
        if self._after_ns is not None and file.mtime_ns <= self._after_ns:
            return False
        if self._before_ns is not None and file.mtime_ns >= self._before_ns:
            return False
        if self._mime_types:
            mime = guess_mime_type(file.name).lower()
            return any(fnmatchcase(mime, pattern) for pattern in self._mime_types)
        return True


def _glob_hit(patterns: list[str], file: SourceFile) -> bool:
    return any(fnmatchcase(file.path, p) or fnmatchcase(file.name, p) for p in patterns)
