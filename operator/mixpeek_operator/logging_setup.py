"""Logging: JSON lines (or text) on stderr, with every known secret redacted.

The code never logs an API key on purpose; redaction is defence in depth against a
library error message, an exception or an `extra` that happens to echo one. The filter
rewrites the record itself (message, args, extras, traceback), so every handler after it
and every formatter, ours or not, sees only redacted text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

REDACTED: Final = "[REDACTED]"
# Shorter values would redact ordinary words; real credentials are far longer.
MIN_SECRET_LENGTH: Final = 6
# kopf.objects logs every handled watch event at INFO ("Handler ... succeeded").
NOISY_LOGGERS: Final = ("httpx", "httpcore", "aiohttp.access", "kubernetes.client.rest", "kopf.objects")
# kopf's per-object logger posts records as Kubernetes Events from a handler of its own,
# before they reach the root handler: it needs the filter on the logger itself.
KOPF_OBJECT_LOGGER: Final = "kopf.objects"

# Credentials shaped by their context, registered or not: `Bearer <token>`, and the value
# of `Authorization:`, `apiKey=`, `token=`, `password=`-like pairs. The scheme word or key
# is kept, so the log still says what was there.
_SHAPED_SECRETS: Final = re.compile(
    r"(?P<keep>\bbearer\s+|"
    r"\b(?:authorization|x-api-key|api[_-]?key|access[_-]?token|token|password)\b[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic)\s+)?)"
    r"[^\s\"',;&}\]]+",
    re.IGNORECASE,
)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# kopf's ObjectLogger extras: kopf's Event poster reads them back, so they stay as they are
# (names and flags, no secrets); `settings` is a large config object nobody should print.
_KOPF_INTERNAL_EXTRAS: Final = frozenset({"settings", "k8s_skip", "k8s_ref"})
_EXCEPTION_FORMATTER: Final = logging.Formatter()


class SecretRegistry:
    """A thread-safe set of secret strings and a precompiled pattern that removes them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            # Longest first, so a secret that contains another is removed whole.
            alternatives = sorted(self._values, key=len, reverse=True)
            # One assignment: `redact` on another thread sees the old or the new pattern, never half.
            self._pattern = re.compile("|".join(map(re.escape, alternatives)))

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretRegistry(<{len(self._values)} secrets>)"

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return _SHAPED_SECRETS.sub(lambda match: match.group("keep") + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts registered and shaped secrets from a record's message, args, extras and traceback.

    Attach it to handlers (a logger's filters do not see records propagated from child
    loggers) or to the logger that creates the records.
    """

    def __init__(self, secrets: SecretRegistry) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.secrets.redact
        # Format the message now: args are merged in, then the result is redacted as a whole.
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            # Formatters print exc_text and skip exc_info when it is None; dropping exc_info
            # keeps a formatter that re-formats the exception from printing it unredacted.
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRIBUTES and key not in _KOPF_INTERNAL_EXTRAS:
                setattr(record, key, _redact_value(value, redact))
        return True


def _redact_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item, redact) for item in value]
    return redact(str(value))  # what a formatter would print anyway


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras = {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and key not in _KOPF_INTERNAL_EXTRAS
    }
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and "object" not in extras:
        # kopf's object loggers carry the object reference; show it like our own `object`.
        name, namespace = ref.get("name"), ref.get("namespace")
        extras["object"] = f"{namespace}/{name}" if namespace else str(name)
    return extras


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, exception, stack."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = _extras(record)
        # The fixed fields win over an extra of the same name.
        entry.update(
            time=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
        )
        exception = _exception_text(record)
        if exception:
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, then the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in extras.items())
        exception = _exception_text(record)
        if exception:
            line += "\n" + exception
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


class _OperatorHandler(logging.StreamHandler[TextIO]):
    """Marks the handler `configure_logging` installed, so a second call replaces it."""


def configure_logging(
    level: str,
    fmt: str,
    secrets: SecretRegistry,
    *,
    stream: TextIO | None = None,
) -> None:
    """Send every log record to stderr (or `stream`) as JSON lines or text, secrets redacted.

    `level` is a logging level name, `fmt` "json" or "text". Third-party loggers in
    NOISY_LOGGERS are held at WARNING unless `level` is DEBUG. Safe to call again.
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    formatters: dict[str, logging.Formatter] = {"json": JsonFormatter(), "text": TextFormatter()}
    if fmt not in formatters:
        raise ValueError(f"unknown log format {fmt!r}; expected 'json' or 'text'")

    redacting = RedactingFilter(secrets)
    handler = _OperatorHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatters[fmt])
    handler.addFilter(redacting)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OperatorHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    kopf_objects = logging.getLogger(KOPF_OBJECT_LOGGER)
    for old_filter in [f for f in kopf_objects.filters if isinstance(f, RedactingFilter)]:
        kopf_objects.removeFilter(old_filter)
    kopf_objects.addFilter(redacting)

    noisy_level = logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(noisy_level)
