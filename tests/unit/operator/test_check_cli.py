"""`mixpeek-operator check` (the chart's helm test) as a process against the emulator over HTTP:
one line of answer, exit 0 only when Mixpeek was reached with an accepted key, and never the key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from mixpeek_operator.check_cli import ENV_API_KEY, ENV_BASE_URL, ENV_NAMESPACE, ENV_SECRET
from mixpeek_operator.emulator.seed import DEFAULT_API_KEY
from mixpeek_operator.emulator.server import EmulatorServer
from mixpeek_operator.emulator.testing import DEFAULT_BUCKET, DEFAULT_NAMESPACE, asgi_client, create_sync

pytest_plugins = ["mixpeek_operator.emulator.pytest_plugin"]

SECRET = "mixpeek-system/mixpeek-default"


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MIXPEEK_",))}
    return subprocess.run(
        [sys.executable, "-m", "mixpeek_operator", "check", "--timeout", "5", *args],
        env={**clean, ENV_SECRET: SECRET, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def credentials(server: EmulatorServer, api_key: str = DEFAULT_API_KEY) -> dict[str, str]:
    return {ENV_API_KEY: api_key, ENV_NAMESPACE: DEFAULT_NAMESPACE, ENV_BASE_URL: server.base_url}


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    output = (result.stdout + result.stderr).strip()
    assert len(output.splitlines()) == 1, output
    assert DEFAULT_API_KEY not in output
    return output


async def test_lists_the_bucket_and_counts_its_syncs(served_emulator: EmulatorServer) -> None:
    async with asgi_client(served_emulator.app) as client:
        await create_sync(client)
    result = check(credentials(served_emulator), "--bucket", DEFAULT_BUCKET)
    assert result.returncode == 0, result.stderr
    assert one_line(result) == (
        f"ok: reached Mixpeek at {served_emulator.base_url} (namespace {DEFAULT_NAMESPACE}), "
        f"key accepted: bucket {DEFAULT_BUCKET} has 1 sync(s)"
    )


def test_without_a_bucket_a_404_for_the_probe_bucket_counts_as_reached(
    served_emulator: EmulatorServer,
) -> None:
    result = check(credentials(served_emulator))
    assert result.returncode == 0, result.stderr
    assert one_line(result).startswith(f"ok: reached Mixpeek at {served_emulator.base_url}")


def test_a_wrong_key_fails_with_the_secret_named(served_emulator: EmulatorServer) -> None:
    result = check(credentials(served_emulator, api_key="sk_wrong_key_never_valid"))
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"error: Mixpeek at {served_emulator.base_url} (namespace default) rejected")
    assert SECRET in line
    assert "401" in line
    assert "sk_wrong_key_never_valid" not in line


def test_an_unknown_bucket_fails_when_one_is_named(served_emulator: EmulatorServer) -> None:
    result = check(credentials(served_emulator), "--bucket", "bkt_nowhere")
    assert result.returncode == 1
    assert "bucket bkt_nowhere not found" in one_line(result)


@pytest.mark.parametrize(
    ("missing", "message"),
    [(ENV_API_KEY, f"error: no API key: {SECRET} has no 'apiKey' key, or does not exist"),
     (ENV_NAMESPACE, f"error: no Mixpeek namespace: {SECRET} has no 'namespace' key")],
)  # fmt: skip
def test_a_secret_without_a_key_says_which(
    served_emulator: EmulatorServer, missing: str, message: str
) -> None:
    env = credentials(served_emulator)
    del env[missing]
    result = check(env)
    assert result.returncode == 1
    assert one_line(result) == message


def test_an_unreachable_endpoint_fails_with_the_address() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = check({ENV_API_KEY: DEFAULT_API_KEY, ENV_NAMESPACE: DEFAULT_NAMESPACE, ENV_BASE_URL: url})
    assert result.returncode == 1
    assert one_line(result).startswith(f"error: cannot reach Mixpeek at {url} (namespace default)")


def test_a_service_link_variable_is_one_clear_line_not_a_traceback() -> None:
    """Kubernetes injects MIXPEEK_OPERATOR_METRICS_PORT=tcp://… for a Service named
    `mixpeek-operator-metrics` into pods that do not set enableServiceLinks: false."""
    env = dict(os.environ, MIXPEEK_OPERATOR_METRICS_PORT="tcp://198.19.128.18:8080")
    result = subprocess.run(
        [sys.executable, "-m", "mixpeek_operator", "emulator", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "MIXPEEK_OPERATOR_METRICS_PORT must be a number, got 'tcp://198.19.128.18:8080'"
        " (a Service link variable? set enableServiceLinks: false on the pod)"
    ]
