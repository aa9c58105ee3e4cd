"""The emulator over real HTTP: the CLI as a process, the threaded server, and the admin client."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mixpeek_operator.emulator.admin import EmulatorAdmin
from mixpeek_operator.emulator.server import EmulatorServer
from mixpeek_operator.emulator.testing import DEFAULT_CONNECTION, SYNCS_PATH, auth_headers

pytest_plugins = ["mixpeek_operator.emulator.pytest_plugin"]

STARTUP_SECONDS = 20
CREATE_BODY = {"connection_id": DEFAULT_CONNECTION, "source_path": "demo/videos"}


class EmulatorProcess:
    """`python -m mixpeek_operator emulator ...` with a port file, stopped by signal."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port_file = tmp_path / f"port-{time.monotonic_ns()}"
        command = [sys.executable, "-m", "mixpeek_operator", "emulator", "--port", "0"]
        command += ["--port-file", str(self.port_file), "--log-level", "warning", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_listening(self) -> str:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.port_file.exists():
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, "the emulator did not write its port file"
            time.sleep(0.05)
        return f"http://127.0.0.1:{int(self.port_file.read_text())}"

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            stdout, stderr = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        return self.process.returncode, stdout, stderr


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[EmulatorProcess]]:
    started: list[EmulatorProcess] = []
    yield started
    for emulator_process in started:
        emulator_process.stop(signal.SIGKILL)


def start(processes: list[EmulatorProcess], tmp_path: Path, *args: str) -> tuple[EmulatorProcess, str]:
    emulator_process = EmulatorProcess(tmp_path, *args)
    processes.append(emulator_process)
    return emulator_process, emulator_process.wait_listening()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_announces_and_exits_cleanly_on_signals(
    tmp_path: Path, processes: list[EmulatorProcess], sig: signal.Signals
) -> None:
    emulator_process, base_url = start(processes, tmp_path)
    with httpx.Client(base_url=base_url, headers=auth_headers()) as client:
        assert client.post(SYNCS_PATH, json=CREATE_BODY).status_code == 200
        assert client.post(f"{SYNCS_PATH}/list").json()["total"] == 1
    code, stdout, stderr = emulator_process.stop(sig)
    assert code == 0, stderr
    assert stdout.splitlines() == [
        f"mixpeek emulator listening on {base_url} (api key: sk_test_emulator, namespace: default)"
    ]
    assert "sk_test_emulator" not in stderr  # requests are never logged with their headers


def test_cli_state_file_survives_a_restart(tmp_path: Path, processes: list[EmulatorProcess]) -> None:
    state_file = tmp_path / "state.json"
    first, base_url = start(processes, tmp_path, "--state-file", str(state_file))
    with httpx.Client(base_url=base_url, headers=auth_headers()) as client:
        created = client.post(SYNCS_PATH, json=CREATE_BODY | {"metadata": {"keep": "me"}}).json()
    assert first.stop()[0] == 0

    _, base_url = start(processes, tmp_path, "--state-file", str(state_file))
    with httpx.Client(base_url=base_url, headers=auth_headers()) as client:
        again = client.get(f"{SYNCS_PATH}/{created['sync_config_id']}")
    assert again.status_code == 200
    assert {k: again.json()[k] for k in ("sync_config_id", "created_at", "metadata", "source_path")} == {
        k: created[k] for k in ("sync_config_id", "created_at", "metadata", "source_path")
    }


def test_cli_custom_seed_and_options(tmp_path: Path, processes: list[EmulatorProcess]) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "api_keys: [{key: sk_custom, user_id: u1, internal_id: o1}]\n"
        "namespaces: [{id: ns_x, name: xspace, buckets: [{id: bkt_x}],\n"
        "              connections: [{id: c1, provider: tigris}]}]\n"
    )
    emulator_process, base_url = start(
        processes, tmp_path, "--seed", str(seed), "--strict", "--validation-errors", "fastapi"
    )
    with httpx.Client(base_url=base_url, headers=auth_headers("sk_custom", "xspace")) as client:
        body = {"connection_id": "c1", "source_path": "p", "surprise": True}
        refused = client.post("/v1/buckets/bkt_x/syncs", json=body)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "surprise"]
        assert client.post(
            "/v1/buckets/bkt_x/syncs", json={"connection_id": "c1", "source_path": "p"}
        ).is_success
    code, stdout, _ = emulator_process.stop()
    assert code == 0
    assert "(api key: sk_custom, namespace: xspace)" in stdout


def test_cli_request_log_size_keeps_the_newest(tmp_path: Path, processes: list[EmulatorProcess]) -> None:
    _, base_url = start(processes, tmp_path, "--request-log-size", "2")
    with httpx.Client(base_url=base_url, headers=auth_headers()) as client:
        for limit in (1, 2, 3):
            client.post(f"{SYNCS_PATH}/list", params={"limit": limit})
        log = client.get("/_emulator/requests").json()["requests"]
    assert [entry["query"] for entry in log] == ["limit=2", "limit=3"]


def test_cli_refuses_a_broken_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("api_keys: []\nnamespaces: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "mixpeek_operator", "emulator", "--port", "0", "--seed", str(seed)],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot start" in result.stderr
    assert "api_keys" in result.stderr


# --- the threaded server and the admin client ---------------------------------------------------


@pytest.fixture
def admin(served_emulator: EmulatorServer) -> Iterator[EmulatorAdmin]:
    with EmulatorAdmin(served_emulator.base_url) as client:
        yield client


@pytest.fixture
def api(served_emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served_emulator.base_url, headers=auth_headers(), timeout=5) as client:
        yield client


def test_admin_client_out_of_band_changes(admin: EmulatorAdmin, api: httpx.Client) -> None:
    assert admin.health() == {"status": "ok"}
    sync_id = api.post(SYNCS_PATH, json=CREATE_BODY).json()["sync_config_id"]
    assert [s["sync_config_id"] for s in admin.list_syncs(bucket_id="bkt_demo")] == [sync_id]
    assert admin.list_syncs(bucket_id="bkt_media") == []
    assert admin.pause_sync(sync_id, reason="quota")["pause_reason"] == "quota"
    assert api.get(f"{SYNCS_PATH}/{sync_id}").json()["paused"] is True
    assert admin.resume_sync(sync_id)["paused"] is False
    assert admin.patch_sync(sync_id, {"last_error": "boom"})["last_error"] == "boom"
    assert admin.bump_counters(sync_id, total_files_failed=2)["total_files_failed"] == 2
    assert admin.fail_sync(sync_id, "down", count=5)["status"] == "SUSPENDED"
    assert admin.get_sync(sync_id)["is_active"] is False
    admin.delete_sync(sync_id)
    assert api.get(f"{SYNCS_PATH}/{sync_id}").status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as missing:
        admin.get_sync(sync_id)
    assert missing.value.response.status_code == 404


def test_admin_client_clock_behaviour_counts_and_reset(admin: EmulatorAdmin, api: httpx.Client) -> None:
    start = admin.now()
    sync_id = api.post(SYNCS_PATH, json=CREATE_BODY | {"polling_interval_seconds": 30}).json()[
        "sync_config_id"
    ]
    assert admin.advance(35) == 2
    assert admin.now() > start
    assert admin.run_due() == 0
    assert api.get(f"{SYNCS_PATH}/{sync_id}").json()["sync_run_counter"] == 2
    assert admin.set_behaviour(trigger_when_paused="conflict")["trigger_when_paused"] == "conflict"
    assert admin.behaviour()["trigger_when_paused"] == "conflict"
    counts = admin.request_counts()
    assert (counts["endpoints"]["create"], counts["endpoints"]["get"]) == (1, 1)
    assert [entry["endpoint"] for entry in admin.request_log(limit=1)] == ["get"]
    admin.clear_requests()
    assert admin.request_counts()["total"] == 0
    admin.reset()
    assert admin.list_syncs() == []
    assert admin.behaviour()["trigger_when_paused"] == "noop"


def test_admin_client_faults_over_real_http(admin: EmulatorAdmin, api: httpx.Client) -> None:
    rules = admin.set_faults(endpoint="list", rate_limit_count=1, retry_after_seconds=2)
    assert [(r["endpoint"], r["rate_limit_count"]) for r in rules] == [("list", 1)]
    limited = api.post(f"{SYNCS_PATH}/list")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert api.post(f"{SYNCS_PATH}/list").status_code == 200
    admin.add_fault(endpoint="create", hang_count=1, hang_seconds=1.5)
    with pytest.raises(httpx.ReadTimeout):
        api.post(SYNCS_PATH, json=CREATE_BODY, timeout=0.3)
    assert api.post(f"{SYNCS_PATH}/list").status_code == 200
    admin.set_faults(endpoint="create", response_delay_seconds=1.5)
    with pytest.raises(httpx.ReadTimeout):
        api.post(SYNCS_PATH, json=CREATE_BODY, timeout=0.3)
    assert len(admin.list_syncs()) == 1  # handled at once; only the answer was held back
    admin.clear_faults()
    assert admin.faults() == []
    # The hung create was read before the hang and completes afterwards: the client cannot know.
    deadline = time.monotonic() + 10
    while admin.request_counts()["endpoint_status"].get("create") != {"200": 2}:
        assert time.monotonic() < deadline, admin.request_counts()
        time.sleep(0.1)
    assert len(admin.list_syncs()) == 2
