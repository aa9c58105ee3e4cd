"""The operator starts under any numeric UID, with or without a passwd entry.

Kubernetes runs the image as the chart's `runAsUser: 65532` and OpenShift assigns arbitrary
UIDs; neither has an /etc/passwd entry in the image. kopf's default identity comes from
getpass.getuser(), which raised `KeyError: getpwuid(): uid not found` and crash-looped the pod.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from localcluster import free_port, spawn, terminate
from mixpeek_operator.coordination import operator_identity


def test_identity_is_the_pod_name_from_the_downward_api() -> None:
    assert operator_identity({"POD_NAME": "op-7d9f-abcde", "HOSTNAME": "other"}) == "op-7d9f-abcde"


def test_identity_falls_back_to_hostname_then_the_host_made_unique_per_process() -> None:
    # Unique even on one machine: two processes sharing a name would both think they hold a Lease.
    first, second = (
        operator_identity({"HOSTNAME": "op-7d9f-abcde"}),
        operator_identity({"HOSTNAME": "op-7d9f-abcde"}),
    )
    assert first.startswith("op-7d9f-abcde-")
    assert first != second
    assert operator_identity({}).startswith(f"{socket.gethostname()}-")


def _uid_without_passwd_entry() -> int:
    uid = 65532
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def test_operator_runs_under_a_uid_without_passwd_entry(tmp_path: Path) -> None:
    """The real `mixpeek-operator run` as a UID with no passwd entry stays up and answers its
    liveness probe (the API server here is unreachable: startup must not depend on it)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root on Linux: this guard must not be skipped there")
        pytest.skip("needs root on Linux to switch to a UID without a passwd entry")
    uid = _uid_without_passwd_entry()
    tmp_path.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    unreachable = f"https://127.0.0.1:{free_port()}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": unreachable}}],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    kubeconfig.chmod(0o644)
    health_port = free_port()
    # setpriv drops to `uid`; the ambient CAP_DAC_READ_SEARCH only lets it read the test's
    # interpreter where it lives (possibly a root-only home), nothing else of root's.
    proc = spawn(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "HOME=/tmp",
            f"KUBECONFIG={kubeconfig}",
            sys.executable,
            "-m",
            "mixpeek_operator",
            "run",
            "--health-port",
            str(health_port),
            "--metrics-port",
            "0",
            "--log-format",
            "text",
        ],
        tmp_path / "operator.log",
    )
    try:
        answered = False
        deadline = time.monotonic() + 30
        while not answered and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as resp:
                    answered = resp.status == 200
            except OSError:
                time.sleep(0.2)
        # setpriv and env exec, so the spawned pid is the operator itself.
        running_as = psutil.Process(proc.pid).uids().real if proc.poll() is None else None
    finally:
        terminate(proc)
    log = (tmp_path / "operator.log").read_text(errors="replace")
    assert "getpwuid" not in log, log
    assert answered, f"operator did not answer /healthz as uid {uid}:\n{log[-3000:]}"
    assert running_as == uid
