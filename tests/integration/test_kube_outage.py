"""A Kubernetes API outage (the apiserver restarting) is a retried warning, not a crash.

The operator's objects drift remotely while kube-apiserver is down, so reconciles run and
their status writes fail with connection errors (and 503/429 while it starts). Each object
must log one WARNING for the outage, no ERROR and no traceback, and converge afterwards.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from hack.localcluster import ControlPlane
from tests.support.operator_support import (
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    has_condition,
    is_ready,
    sync_id,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crd_installed")

OUTAGE_SECONDS = 6.0


def test_apiserver_restart_is_one_warning_per_object_and_everything_converges(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    cluster: ControlPlane,
    start_operator: OperatorFactory,
) -> None:
    operator = start_operator(objects.namespace)
    names = [f"outage-{index}" for index in range(5)]
    for name in names:
        objects.create(bucketsync(name, pollingIntervalSeconds=300))
    remote = {name: sync_id(objects.wait_ready(name)) for name in names}

    cluster.stop_apiserver()
    try:
        for sync in remote.values():  # a change the observer sees and each object reports in status
            assert sync is not None
            mixpeek.admin.fail_sync(sync, "S3 access denied")
        time.sleep(OUTAGE_SECONDS)
    finally:
        cluster.start_apiserver()

    def converged() -> bool:
        return all(
            is_ready(obj := objects.get(n)) and has_condition(obj, "RemoteHealthy", "False", "RemoteFailed")
            for n in names
        )

    wait_for(converged, 60, interval=0.5, what="every object reporting the remote failure after the outage")
    assert operator.alive()

    records = [json.loads(line) for line in operator.logs().splitlines() if line.startswith("{")]
    engine = [r for r in records if r.get("logger", "").startswith("mixpeek_operator")]
    outage_warnings = Counter(
        r.get("object") for r in engine if r["message"].startswith("Kubernetes API unavailable")
    )
    print(f"\noutage warnings per object: {dict(outage_warnings)}")
    assert not [r for r in engine if r["level"] in ("ERROR", "CRITICAL")], "an outage logged as an error"
    assert not [r for r in engine if "reconcile crashed" in r["message"]]
    assert not [r for r in engine if any(k in r for k in ("exc_info", "exception", "traceback"))]
    assert outage_warnings, "no reconcile ran into the outage: the test would prove nothing"
    assert max(outage_warnings.values()) == 1
