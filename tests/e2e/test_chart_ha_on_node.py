"""Two operator replicas on a real node: the chart's leader election (active/standby on a Lease).

One scenario in order (each test builds on the previous one): the chart installed with
`replicaCount: 2` (leader election on by default) next to its own emulator; both pods Ready,
exactly one holding the Lease; `kubectl delete pod` of the leader while objects are created
and edited; a `helm upgrade` that rolls both pods while the Lease is polled. Remote syncs
are counted through the emulator's admin API, so a duplicate create by two replicas fails.
The release watches only its own application namespace, so the other e2e scenario's
objects never reach it, and it deletes its objects before it is uninstalled.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest

from hack.bench.stats import prometheus_sum
from tests.support.node_support import (
    CHART,
    CREDENTIALS_SECRET,
    EmulatorService,
    Node,
    assert_runs_working_tree,
    create_credentials,
    deploy_emulator,
    wait_pods_ready,
)
from tests.support.operator_support import bucketsync, is_ready, wait_for

HA_NS = "mixpeek-ha"
APP_NS = "e2e-ha-app"
RELEASE = "mixpeek-ha"
FULLNAME = f"{RELEASE}-mixpeek-operator"  # the chart's fullname, and the Lease's default name
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{HA_NS}/leases/{FULLNAME}"
REPLICAS = 2
LEASE_DURATION = 15.0  # the chart's default leaderElection.leaseDuration
POLL_INTERVAL = 0.5
METRICS_PORT = 8080  # the chart's default metrics.port (the pod proxy takes a number)
BEFORE = [f"before-{i}" for i in range(4)]
AFTER_DELETE = [f"after-delete-{i}" for i in range(4)]
AFTER_UPGRADE = [f"after-upgrade-{i}" for i in range(2)]
AFTER_DRAIN = [f"after-drain-{i}" for i in range(2)]
AFTER_KILL = [f"after-kill-{i}" for i in range(3)]
EDITED_BATCH_SIZE = 77

pytestmark = pytest.mark.timeout(900)


def _epoch(micro_time: str) -> float:
    """A Lease MicroTime as seconds since the epoch (the node's pods share this host's clock)."""
    return datetime.fromisoformat(micro_time).timestamp()


@dataclass(frozen=True)
class LeaseSample:
    """The Lease as read at `at` (host wall clock)."""

    at: float
    holder: str
    acquired: float | None
    renewed: float | None
    duration: float

    def valid(self) -> bool:
        """Some replica held the lease at the moment it was read."""
        return bool(self.holder) and self.renewed is not None and self.renewed + self.duration > self.at


def _read_lease(node: Node, path: str = LEASE_PATH) -> LeaseSample | None:
    at = time.time()
    try:
        lease = node.raw(path)
    except HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    spec = lease.get("spec") or {}
    return LeaseSample(
        at=at,
        holder=spec.get("holderIdentity") or "",
        acquired=_epoch(spec["acquireTime"]) if spec.get("acquireTime") else None,
        renewed=_epoch(spec["renewTime"]) if spec.get("renewTime") else None,
        duration=float(spec.get("leaseDurationSeconds") or 0),
    )


def _holder(node: Node, path: str = LEASE_PATH) -> str:
    sample = _read_lease(node, path)
    return sample.holder if sample is not None and sample.valid() else ""


class LeasePoller:
    """Reads the Lease every POLL_INTERVAL on a thread, while the main thread drives the rollout."""

    def __init__(self, node: Node, path: str = LEASE_PATH) -> None:
        self.node = node
        self.path = path
        self.samples: list[LeaseSample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-poller", daemon=True)

    def __enter__(self) -> LeasePoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                sample = _read_lease(self.node, self.path)
                if sample is not None:
                    self.samples.append(sample)
            except Exception as exc:  # an unreadable Lease is reported, never a gap
                self.errors.append(repr(exc))
            self._stop.wait(max(0.0, POLL_INTERVAL - (time.monotonic() - began)))

    def longest_gap(self) -> tuple[float, float]:
        """The longest handover: (from the last read of the old tenure as valid to the first read
        of the next one as valid, an upper bound; from the old tenure's end, its release or
        expiry as the Lease recorded it, to the next acquireTime)."""
        longest, by_lease = 0.0, 0.0
        last_valid: LeaseSample | None = None
        first_invalid: LeaseSample | None = None
        for sample in self.samples:
            if not sample.valid():
                first_invalid = first_invalid or sample
                continue
            handover = last_valid is not None and (
                first_invalid is not None
                or (sample.holder, sample.acquired) != (last_valid.holder, last_valid.acquired)
            )
            if handover and last_valid is not None and sample.at - last_valid.at > longest:
                longest = sample.at - last_valid.at
                if first_invalid is None:  # handed over between two reads
                    ended = last_valid.at
                elif not first_invalid.holder and first_invalid.renewed is not None:  # released
                    ended = first_invalid.renewed
                else:  # expired
                    ended = (last_valid.renewed or last_valid.at) + last_valid.duration
                by_lease = max(0.0, (sample.acquired or sample.at) - ended)
            first_invalid, last_valid = None, sample
        assert first_invalid is None, f"no valid lease at the end of the polling: {self.samples[-3:]}"
        return longest, by_lease

    def holders(self) -> list[tuple[float, str]]:
        """(time, holder) at each change of hands, the empty holder being a release."""
        changes: list[tuple[float, str]] = []
        for sample in self.samples:
            if not changes or changes[-1][1] != sample.holder:
                changes.append((sample.at, sample.holder))
        return changes


@pytest.fixture(scope="module")
def emulator(node: Node) -> Iterator[EmulatorService]:
    """The release, its emulator and its application namespace; everything removed at the end."""
    node.kubectl("create", "namespace", HA_NS)
    node.kubectl("label", "namespace", HA_NS, "pod-security.kubernetes.io/enforce=restricted")
    node.kubectl("create", "namespace", APP_NS)
    service = deploy_emulator(node, HA_NS)
    create_credentials(node, APP_NS, service)
    yield service
    # Objects first, while the operator still removes their finalizers; then the release.
    node.kubectl("-n", APP_NS, "delete", "bucketsyncs", "--all", "--timeout=120s", check=False, timeout=150)
    node.helm("uninstall", RELEASE, "--namespace", HA_NS, "--wait", "--timeout=120s")
    node.kubectl("delete", "namespace", APP_NS, HA_NS, "--timeout=180s", timeout=200)
    # The next scenario installs the chart on a cluster without the CRD (tests/e2e/conftest.py).
    node.kubectl("delete", "crd", "bucketsyncs.mixpeek.com", "--timeout=60s", timeout=90)


def _remote_by_path(emulator: EmulatorService) -> dict[str, list[dict[str, Any]]]:
    """The remote syncs of bucket bkt_demo by source path (each BucketSync has its own path)."""
    by_path: dict[str, list[dict[str, Any]]] = {}
    for sync in emulator.syncs("?bucket_id=bkt_demo"):
        by_path.setdefault(sync["source_path"], []).append(sync)
    return by_path


def _source_path(name: str) -> str:
    return f"demo-bucket/ha/{name}"


def _apply_objects(node: Node, names: list[str], **spec: Any) -> None:
    node.apply(APP_NS, *(bucketsync(name, sourcePath=_source_path(name), **spec) for name in names))


def _assert_exactly_once(node: Node, emulator: EmulatorService, names: list[str]) -> None:
    """Every object Ready at its current generation with its own remote sync, created once
    (the emulator's create count since it started equals the number of objects)."""

    def all_ready() -> dict[str, Any] | None:
        objects = {obj["metadata"]["name"]: obj for obj in node.bucketsyncs(APP_NS)}
        return objects if all(is_ready(objects.get(name)) for name in names) else None

    objects: dict[str, Any] = wait_for(all_ready, timeout=180, interval=1, what=f"{len(names)} objects Ready")
    remote = _remote_by_path(emulator)
    duplicates = {path: len(syncs) for path, syncs in remote.items() if len(syncs) != 1}
    assert not duplicates, f"remote syncs per source path: {duplicates}"
    assert sorted(remote) == sorted(_source_path(name) for name in names)
    for name in names:
        (sync,) = remote[_source_path(name)]
        assert objects[name]["status"]["syncConfigId"] == sync["sync_config_id"], name
    created = emulator.counts()["endpoint_status"].get("create", {})
    assert created.get("200", 0) + created.get("201", 0) == len(names), created


def _assert_edited(emulator: EmulatorService, name: str) -> None:
    """The object's edited batchSize reached its remote sync (_assert_exactly_once saw it Ready
    at its new generation)."""
    (sync,) = _remote_by_path(emulator)[_source_path(name)]
    assert sync["batch_size"] == EDITED_BATCH_SIZE, sync


def _metrics(node: Node, pod: str, namespace: str = HA_NS) -> str:
    """One pod's /metrics, through the apiserver's pod proxy."""
    return node.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}:{METRICS_PORT}/proxy/metrics"
    ).stdout


def _assert_standby_idle(node: Node, pod: str, namespace: str = HA_NS) -> None:
    """A standby makes no Mixpeek call and no Kubernetes write except on its Lease."""
    text = _metrics(node, pod, namespace)
    assert prometheus_sum(text, "mixpeek_operator_leading") == 0.0, pod
    assert prometheus_sum(text, "mixpeek_api_requests_total") == 0.0, pod
    writes = prometheus_sum(text, "bucketsync_kube_writes_total")
    assert writes == prometheus_sum(text, "bucketsync_kube_writes_total", kind="lease"), (
        [line for line in text.splitlines() if line.startswith("bucketsync_kube_writes_total")],
        pod,
    )


def _print_diagnostics(node: Node) -> None:
    """The Lease and the operator pods' last log lines, for a failure's report."""
    print(node.kubectl("-n", HA_NS, "get", "lease", "-o", "yaml", check=False).stdout)
    for pod in node.live_pods(HA_NS):
        name = pod["metadata"]["name"]
        print(f"--- {name}\n" + node.kubectl("-n", HA_NS, "logs", name, check=False).stdout[-4000:])


def test_two_replicas_ready_exactly_one_holds_the_lease(node: Node, emulator: EmulatorService) -> None:
    node.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        HA_NS,
        *node.image_values(),
        "--set",
        f"replicaCount={REPLICAS}",
        "--set",
        f"watchNamespaces={{{APP_NS}}}",
        "--set",
        "settings.observeInterval=5",
        "--wait",
        "--timeout=180s",
    )
    # The moment `helm install --wait` returns, as `helm install --wait && kubectl apply`: the
    # operator is Ready only once BucketSync creates are admitted (a new CRD's schema reaches
    # the admission policy plugin seconds after the CRD).
    _apply_objects(node, BEFORE)
    deployment = node.json("-n", HA_NS, "get", "deployment", FULLNAME)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pods = [pod["metadata"]["name"] for pod in wait_pods_ready(node, HA_NS, REPLICAS)]
    operators = node.processes("mixpeek-operator run")
    assert len(operators) == REPLICAS
    for pid in operators:
        assert_runs_working_tree(pid)
    try:
        leader = wait_for(lambda: _holder(node), timeout=60, interval=0.5, what="a lease holder")
    except AssertionError:
        _print_diagnostics(node)
        raise
    assert leader in pods
    assert prometheus_sum(_metrics(node, leader), "mixpeek_operator_leading") == 1.0
    _assert_exactly_once(node, emulator, BEFORE)
    # The holder did the work; the other pod stood by (Ready, caches warm, not leading).
    (standby,) = [pod for pod in pods if pod != leader]
    _assert_standby_idle(node, standby)


def test_deleting_the_leader_pod_hands_over_and_objects_keep_converging(
    node: Node, emulator: EmulatorService
) -> None:
    old = _holder(node)
    assert old, "no leader before the delete"
    deleted_at = time.time()
    node.kubectl("-n", HA_NS, "delete", "pod", old, "--wait=false")
    # Work that only a leader can do, given while the leadership moves.
    _apply_objects(node, AFTER_DELETE)
    _apply_objects(node, BEFORE[:1], batchSize=EDITED_BATCH_SIZE)

    def new_leader() -> LeaseSample | None:
        sample = _read_lease(node)
        return sample if sample is not None and sample.valid() and sample.holder != old else None

    takeover: LeaseSample = wait_for(
        new_leader, timeout=LEASE_DURATION + 30, interval=0.2, what="a new leader"
    )
    assert takeover.acquired is not None
    _assert_exactly_once(node, emulator, BEFORE + AFTER_DELETE)
    _assert_edited(emulator, BEFORE[0])
    writes = [
        _epoch(entry["started_at"])
        for entry in emulator.requests()
        if entry["endpoint"] in ("create", "update") and _epoch(entry["started_at"]) >= deleted_at
    ]
    assert writes, "no remote write after the delete"
    print(
        f"\nleader pod deleted ({old}): lease taken over by {takeover.holder} after "
        f"{takeover.acquired - deleted_at:.2f}s, first remote write after {min(writes) - deleted_at:.2f}s"
    )
    # The Deployment replaced the deleted pod; the new leader kept the lease.
    wait_pods_ready(node, HA_NS, REPLICAS, not_named=(old,))
    assert _holder(node) == takeover.holder


def test_helm_upgrade_rolls_both_pods_without_a_leader_gap_longer_than_the_lease(
    node: Node, emulator: EmulatorService
) -> None:
    before = [pod["metadata"]["name"] for pod in node.live_pods(HA_NS)]
    created_before = emulator.counts()["endpoint_status"].get("create", {})
    with LeasePoller(node) as poller:
        node.helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            HA_NS,
            "--reuse-values",
            "--set",
            "settings.logLevel=DEBUG",
            "--wait",
            "--timeout=300s",
        )
        after = [
            pod["metadata"]["name"] for pod in wait_pods_ready(node, HA_NS, REPLICAS, not_named=tuple(before))
        ]
        wait_for(
            lambda: _holder(node) in after, timeout=LEASE_DURATION + 30, interval=0.5, what="a new pod leads"
        )
        time.sleep(2 * POLL_INTERVAL)
    assert not poller.errors, poller.errors
    longest, by_lease = poller.longest_gap()
    began = poller.samples[0].at
    timeline = ", ".join(f"{at - began:.1f}s {holder or '(released)'}" for at, holder in poller.holders())
    print(
        f"\nhelm upgrade: longest time without a valid lease {longest:.2f}s by polling every "
        f"{POLL_INTERVAL}s ({by_lease:.2f}s by the Lease's timestamps); holders: {timeline}"
    )
    assert poller.holders()[-1][1] in after  # the lease did move to a new pod
    assert longest <= LEASE_DURATION
    for pod in node.live_pods(HA_NS):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["MIXPEEK_OPERATOR_LOG_LEVEL"] == "DEBUG"
    # The objects stayed Ready through the rollout and nothing was created again.
    not_ready = [o["metadata"]["name"] for o in node.bucketsyncs(APP_NS) if not is_ready(o)]
    assert not not_ready, not_ready
    assert emulator.counts()["endpoint_status"].get("create", {}) == created_before
    # The new pods converge new work, exactly once.
    _apply_objects(node, AFTER_UPGRADE)
    _apply_objects(node, AFTER_DELETE[:1], batchSize=EDITED_BATCH_SIZE)
    _assert_exactly_once(node, emulator, BEFORE + AFTER_DELETE + AFTER_UPGRADE)
    _assert_edited(emulator, AFTER_DELETE[0])


def _evict(node: Node, pod: str) -> int:
    """The Eviction API, as `kubectl drain` uses it: 201 when allowed, 429 when a
    PodDisruptionBudget refuses."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": HA_NS}}
    try:
        node.raw(f"/api/v1/namespaces/{HA_NS}/pods/{pod}/eviction", method="POST", body=body)
    except HTTPError as exc:
        return exc.code
    return 201


def test_a_drain_evicts_one_pod_at_a_time_and_another_live_pod_takes_over(
    node: Node, emulator: EmulatorService
) -> None:
    """The evicted leader releases the Lease; whichever live pod campaigns next wins it: the
    warm standby, or the Deployment's replacement if it started before the release (both
    stand by on the same retry period). A user needs a leader other than the evicted pod
    within the bound, the work resuming, and nothing created twice."""
    leader = _holder(node)
    (standby,) = [
        pod["metadata"]["name"] for pod in node.live_pods(HA_NS) if pod["metadata"]["name"] != leader
    ]
    done_before = BEFORE + AFTER_DELETE + AFTER_UPGRADE
    wait_for(
        lambda: node.json("-n", HA_NS, "get", "pdb", FULLNAME)["status"].get("disruptionsAllowed") == 1,
        timeout=60,
        interval=0.5,
        what="the PodDisruptionBudget allowing one disruption",
    )
    evicted_at = time.time()
    assert _evict(node, leader) == 201
    # The chart's PodDisruptionBudget keeps the other pod until the replacement is Ready.
    assert _evict(node, standby) == 429

    _apply_objects(node, AFTER_DRAIN)  # work given while the leadership moves

    def new_leader() -> LeaseSample | None:
        sample = _read_lease(node)
        live = {pod["metadata"]["name"] for pod in node.live_pods(HA_NS)} - {leader}
        return sample if sample is not None and sample.valid() and sample.holder in live else None

    try:
        takeover: LeaseSample = wait_for(
            new_leader, timeout=LEASE_DURATION + 30, interval=0.2, what="another live pod leads"
        )
    except AssertionError:
        _print_diagnostics(node)
        raise
    assert takeover.acquired is not None
    who = "the standby" if takeover.holder == standby else "the replacement pod"
    took = takeover.acquired - evicted_at
    print(f"\nleader evicted: {who} ({takeover.holder}) took the lease {took:.2f}s later")
    wait_pods_ready(node, HA_NS, REPLICAS, not_named=(leader,))
    # The work resumed under the new leader: the new object converged, nothing was created twice.
    _assert_exactly_once(node, emulator, done_before + AFTER_DRAIN)


def _pod_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (name,) = [item.split(b"=", 1)[1].decode() for item in environ if item.startswith(b"POD_NAME=")]
    return name


def test_sigkill_of_the_leader_process_work_resumes_within_the_lease_duration(
    node: Node, emulator: EmulatorService
) -> None:
    leader = _holder(node)
    (pid,) = [pid for pid in node.processes("mixpeek-operator run") if _pod_of(pid) == leader]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)  # a crash: no release, the lease must expire or be reclaimed
    _apply_objects(node, AFTER_KILL)

    def renewed_after_the_kill() -> LeaseSample | None:
        sample = _read_lease(node)
        valid = sample is not None and sample.valid() and (sample.renewed or 0) > killed_at
        return sample if valid else None

    # Either the standby after expiry, or the kubelet's restart of the same pod (same identity,
    # the old process dead) reclaiming its own lease.
    lead: LeaseSample = wait_for(
        renewed_after_the_kill, timeout=LEASE_DURATION + 30, interval=0.2, what="a leader after the kill"
    )
    assert lead.renewed is not None
    took = lead.renewed - killed_at
    who = "its restarted container" if lead.holder == leader else f"the standby {lead.holder}"
    print(f"\nleader process SIGKILLed ({leader}): {who} led {took:.2f}s later")
    assert took <= LEASE_DURATION + 2 * 2.0 + 2.0  # expiry seen up to a retry period late, plus slack
    _assert_exactly_once(node, emulator, BEFORE + AFTER_DELETE + AFTER_UPGRADE + AFTER_DRAIN + AFTER_KILL)
    pods = {pod["metadata"]["name"]: pod for pod in wait_pods_ready(node, HA_NS, REPLICAS)}
    assert pods[leader]["status"]["containerStatuses"][0]["restartCount"] >= 1


def test_deleting_every_object_deletes_each_remote_sync_once_and_the_standby_stays_idle(
    node: Node, emulator: EmulatorService
) -> None:
    names = BEFORE + AFTER_DELETE + AFTER_UPGRADE + AFTER_DRAIN + AFTER_KILL
    deletes_before = sum(emulator.counts()["endpoint_status"].get("delete", {}).values())
    node.kubectl("-n", APP_NS, "delete", "bucketsyncs", "--all", "--timeout=120s", timeout=150)
    assert not node.bucketsyncs(APP_NS)
    assert not _remote_by_path(emulator)
    deleted = emulator.counts()["endpoint_status"].get("delete", {})
    assert sum(deleted.values()) - deletes_before == len(names), deleted
    # The last object gone, the Secret's in-use finalizer was released (by the leader alone).
    wait_for(
        lambda: (
            not node.json("-n", APP_NS, "get", "secret", CREDENTIALS_SECRET)["metadata"].get("finalizers")
        ),
        timeout=30,
        interval=0.5,
        what="the Secret's in-use finalizer released",
    )
    leader = _holder(node)
    (standby,) = [
        pod["metadata"]["name"] for pod in node.live_pods(HA_NS) if pod["metadata"]["name"] != leader
    ]
    _assert_standby_idle(node, standby)
    # Through all of it the operator's own code logged no error on the surviving pods.
    for pod in node.live_pods(HA_NS):
        name = pod["metadata"]["name"]
        logs = node.kubectl("-n", HA_NS, "logs", name).stdout
        assert "Traceback" not in logs, (name, logs[-3000:])
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        errors = [
            line
            for line in lines
            if line.get("level") in ("ERROR", "CRITICAL")
            and str(line.get("logger")).startswith("mixpeek_operator")
        ]
        assert not errors, (name, errors[-5:])


# --- from one replica to two with helm upgrade (its own release, emulator and namespaces) ------

SCALE_NS, SCALE_APP_NS, SCALE_RELEASE = "mixpeek-scale", "e2e-scale-app", "mixpeek-scale"
SCALE_LEASE_PATH = (
    f"/apis/coordination.k8s.io/v1/namespaces/{SCALE_NS}/leases/{SCALE_RELEASE}-mixpeek-operator"
)
SCALE_OBJECTS = [f"scale-{i:02d}" for i in range(50)]


def test_helm_upgrade_from_one_to_two_replicas_while_objects_are_created_has_one_writer(node: Node) -> None:
    """Regression: with one replica the pod ran without leader election, so `helm upgrade` to two
    replicas started two electing pods beside it, one of which led (there was no Lease) while
    the old pod still wrote. Now the old pod holds the Lease until it stops; the new ones wait."""
    node.kubectl("create", "namespace", SCALE_NS)
    node.kubectl("label", "namespace", SCALE_NS, "pod-security.kubernetes.io/enforce=restricted")
    node.kubectl("create", "namespace", SCALE_APP_NS)
    emulator = deploy_emulator(node, SCALE_NS)
    create_credentials(node, SCALE_APP_NS, emulator)
    try:
        node.helm(
            "install",
            SCALE_RELEASE,
            str(CHART),
            "--namespace",
            SCALE_NS,
            *node.image_values(),
            "--set",
            f"watchNamespaces={{{SCALE_APP_NS}}}",
            "--set",
            "settings.observeInterval=5",
            "--wait",
            "--timeout=180s",
        )
        (old,) = [pod["metadata"]["name"] for pod in wait_pods_ready(node, SCALE_NS, 1)]
        wait_for(
            lambda: _holder(node, SCALE_LEASE_PATH) == old,
            timeout=60,
            interval=0.5,
            what="the single replica holding the Lease",
        )

        def create_while_upgrading() -> None:  # one object every 0.4 s, through the rollout
            for name in SCALE_OBJECTS:
                node.apply(SCALE_APP_NS, bucketsync(name, sourcePath=_source_path(name)))
                time.sleep(0.4)

        creating = threading.Thread(target=create_while_upgrading, name="create-while-upgrading")
        with LeasePoller(node, SCALE_LEASE_PATH) as poller:
            creating.start()
            node.helm(
                "upgrade",
                SCALE_RELEASE,
                str(CHART),
                "--namespace",
                SCALE_NS,
                "--reuse-values",
                "--set",
                "replicaCount=2",
                "--wait",
                "--timeout=300s",
            )
            creating.join(timeout=120)
            after = [pod["metadata"]["name"] for pod in wait_pods_ready(node, SCALE_NS, 2, not_named=(old,))]
            wait_for(
                lambda: _holder(node, SCALE_LEASE_PATH) in after,
                timeout=LEASE_DURATION + 30,
                interval=0.5,
                what="a new pod leads",
            )
        assert not poller.errors, poller.errors
        holders = [holder for _, holder in poller.holders() if holder]
        print(f"\nLease holders through the upgrade: {holders}")
        # One writer at a time: the old pod led until it stopped, then exactly one new pod.
        assert holders[0] == old, holders
        assert all(holder in after for holder in holders[1:]), holders
        poller.longest_gap()  # and the Lease was valid at the end

        def all_ready() -> list[dict[str, Any]] | None:
            objects = node.bucketsyncs(SCALE_APP_NS)
            return objects if len(objects) == len(SCALE_OBJECTS) and all(map(is_ready, objects)) else None

        wait_for(all_ready, timeout=180, interval=1, what=f"{len(SCALE_OBJECTS)} objects Ready")
        remote = _remote_by_path(emulator)
        assert sorted(remote) == sorted(_source_path(name) for name in SCALE_OBJECTS)
        assert all(len(syncs) == 1 for syncs in remote.values()), remote
        created = emulator.counts()["endpoint_status"].get("create", {})
        assert created.get("200", 0) + created.get("201", 0) == len(SCALE_OBJECTS), created
        leader = _holder(node, SCALE_LEASE_PATH)
        (standby,) = [pod for pod in after if pod != leader]
        _assert_standby_idle(node, standby, SCALE_NS)
    finally:
        node.kubectl(
            "-n", SCALE_APP_NS, "delete", "bucketsyncs", "--all", "--timeout=120s", check=False, timeout=150
        )
        node.helm("uninstall", SCALE_RELEASE, "--namespace", SCALE_NS, "--wait", "--timeout=120s")
        node.kubectl("delete", "namespace", SCALE_APP_NS, SCALE_NS, "--timeout=180s", timeout=200)
