"""JSON/text log output and secret redaction of `configure_logging`."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mixpeek_operator.logging_setup import (
    REDACTED,
    RedactingFilter,
    SecretRegistry,
    configure_logging,
)

API_KEY = "sk_live_4f9a7c2e1b8d6053"


@pytest.fixture
def secrets() -> SecretRegistry:
    registry = SecretRegistry()
    registry.add(API_KEY)
    return registry


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "aiohttp.access", "kopf.objects")}
    kopf_filters = logging.getLogger("kopf.objects").filters[:]
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("kopf.objects").filters[:] = kopf_filters


def configured(secrets: SecretRegistry, fmt: str = "json", level: str = "DEBUG") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, secrets, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_fixed_fields_and_extras(secrets: SecretRegistry) -> None:
    stream = configured(secrets)
    logging.getLogger("mixpeek_operator.engine").info(
        "reconciled %s in %.1f s",
        "team-a/videos",
        0.25,
        extra={"object": "team-a/videos", "syncConfigId": "sc_1"},
    )
    [entry] = lines(stream)
    assert entry["message"] == "reconciled team-a/videos in 0.2 s"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mixpeek_operator.engine"
    assert entry["object"] == "team-a/videos"
    assert entry["syncConfigId"] == "sc_1"
    assert entry["time"].endswith("+00:00")


@pytest.mark.usefixtures("restore_logging")
def test_kopf_object_reference_becomes_the_object_field(secrets: SecretRegistry) -> None:
    stream = configured(secrets)
    ref = {"apiVersion": "mixpeek.com/v1alpha1", "kind": "BucketSync", "namespace": "ns", "name": "x"}
    logging.getLogger("kopf.objects").info("handler succeeded", extra={"k8s_ref": ref, "k8s_skip": False})
    [entry] = lines(stream)
    assert entry["object"] == "ns/x"
    assert "k8s_ref" not in entry
    assert "k8s_skip" not in entry


@pytest.mark.usefixtures("restore_logging")
def test_a_registered_secret_never_reaches_the_output(secrets: SecretRegistry) -> None:
    stream = configured(secrets)
    log = logging.getLogger("some.library")
    log.warning("request failed with key %s", API_KEY)  # in args
    log.warning(f"message itself holds {API_KEY}")  # in the message
    log.warning("extras", extra={"detail": {"headers": [f"X: {API_KEY}"]}, "raw": API_KEY.encode()})
    try:
        raise RuntimeError(f"upstream echoed the key {API_KEY}")
    except RuntimeError:
        log.exception("call failed")  # in the exception text and traceback

    output = stream.getvalue()
    assert API_KEY not in output
    entries = lines(stream)
    assert len(entries) == 4
    assert entries[0]["message"] == f"request failed with key {REDACTED}"
    assert entries[2]["detail"] == {"headers": [f"X: {REDACTED}"]}
    assert "Traceback (most recent call last)" in entries[3]["exception"]
    assert f"upstream echoed the key {REDACTED}" in entries[3]["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_secrets_added_after_configuration_are_redacted(secrets: SecretRegistry) -> None:
    stream = configured(secrets, fmt="text")
    later = "rotated-key-0123456789"
    secrets.add(later)
    logging.getLogger("x").error("got %s and %s", later, API_KEY, stack_info=True)
    output = stream.getvalue()
    assert later not in output
    assert API_KEY not in output
    assert f"got {REDACTED} and {REDACTED}" in output
    assert "Stack (most recent call last)" in output


@pytest.mark.usefixtures("restore_logging")
def test_text_format_appends_extras(secrets: SecretRegistry) -> None:
    stream = configured(secrets, fmt="text")
    logging.getLogger("mixpeek_operator").info("created", extra={"object": "ns/a", "note": "two words"})
    line = stream.getvalue().strip()
    assert ' INFO    mixpeek_operator: created object=ns/a note="two words"' in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.payload.sig", f"Authorization: Bearer {REDACTED}"),
        (
            "headers={'authorization': 'Basic dXNlcjpwYXNz'}",
            f"headers={{'authorization': 'Basic {REDACTED}'}}",
        ),
        ("sent bearer abc123def", f"sent bearer {REDACTED}"),
        ('{"apiKey": "k-1234567890"}', f'{{"apiKey": "{REDACTED}"}}'),
        ("token=abc.def&x=1", f"token={REDACTED}&x=1"),
        ("token bucket waited 0.5 s", "token bucket waited 0.5 s"),  # prose is left alone
    ],
)
def test_bearer_and_authorization_shapes_are_redacted_without_registration(text: str, expected: str) -> None:
    assert SecretRegistry().redact(text) == expected


def test_registry_prefers_the_longest_secret_and_ignores_short_values() -> None:
    registry = SecretRegistry(["abcdef", "abcdef-longer", "abc", ""])
    assert len(registry) == 2
    assert registry.redact("x abcdef-longer y abcdef z abc") == f"x {REDACTED} y {REDACTED} z abc"
    assert "abcdef" not in repr(registry)


def test_registry_is_safe_to_update_while_redacting() -> None:
    registry = SecretRegistry()
    values = [f"secret-value-{i:04d}" for i in range(200)]
    errors: list[BaseException] = []

    def writer() -> None:
        for value in values:
            registry.add(value)

    def reader() -> None:
        try:
            for value in values:
                registry.redact(f"text with {value}")
        except BaseException as exc:  # pragma: no cover - only on failure
            errors.append(exc)

    threads = [threading.Thread(target=writer), *(threading.Thread(target=reader) for _ in range(3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(registry.redact(value) == REDACTED for value in values)


@pytest.mark.usefixtures("restore_logging")
def test_kopf_object_logger_records_are_redacted_before_its_own_handlers(secrets: SecretRegistry) -> None:
    """kopf posts kopf.objects records as Kubernetes Events from a handler on that logger."""
    configured(secrets)
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    capture = Capture()
    kopf_logger = logging.getLogger("kopf.objects")
    kopf_logger.addHandler(capture)
    try:
        kopf_logger.error("remote said: invalid key %s", API_KEY)
    finally:
        kopf_logger.removeHandler(capture)
    assert seen == [f"remote said: invalid key {REDACTED}"]


@pytest.mark.usefixtures("restore_logging")
def test_configuration_is_idempotent_and_quiets_noisy_libraries(secrets: SecretRegistry) -> None:
    configured(secrets, level="INFO")
    stream = configured(secrets, level="info")
    root = logging.getLogger()
    assert (
        sum(1 for handler in root.handlers if any(isinstance(f, RedactingFilter) for f in handler.filters))
        == 1
    )
    assert len([f for f in logging.getLogger("kopf.objects").filters if isinstance(f, RedactingFilter)]) == 1
    assert root.level == logging.INFO
    logging.getLogger("httpx").info("HTTP Request: GET https://example")
    logging.getLogger("httpx").warning("kept")
    assert [entry["message"] for entry in lines(stream)] == ["kept"]


def test_bad_level_or_format_is_refused(secrets: SecretRegistry) -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "json", secrets)
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml", secrets)
