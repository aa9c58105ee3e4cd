"""`kubectl mixpeek` end to end: the installed console script against the real kube-apiserver,
the emulator and the operator (started through its real entry point)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from hack.localcluster import ControlPlane
from mixpeek_operator.constants import OWNER_UID_KEY, RESERVED_METADATA_PREFIX
from mixpeek_operator.coordination.ring import RING_LABEL
from mixpeek_operator.plugin import shards
from mixpeek_operator.plugin.session import list_bucketsyncs, open_session
from mixpeek_operator.plugin.status import render_table
from tests.support.exec_plugin import exec_kubeconfig, plugin_calls
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    WRONG_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    endpoint_counts,
    make_secret,
    mixpeek_api,
    sync_id,
    wait_for,
    writes_except_reads,
)

PLUGIN = Path(sys.executable).parent / "kubectl-mixpeek"
BUCKETS = ("bkt_demo", "bkt_media", "bkt_other")
NO_WRITES = {"create": 0, "update": 0, "delete": 0, "pause": 0, "resume": 0, "trigger": 0}


def kubectl_mixpeek(
    cluster: ControlPlane, *args: str, kubeconfig: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), "--kubeconfig", str(kubeconfig or cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def out_of_band_sync(i: int) -> tuple[str, dict[str, Any], bool]:
    """Sync number i as someone made it in the dashboard: varied fields, some paused."""
    body: dict[str, Any] = {
        "connection_id": ("conn_s3_demo", "conn_gdrive_demo", "conn_local")[i % 3],
        "source_path": f"team-{i % 7}/Inbox {i}",
        "sync_mode": "initial_only" if i % 11 == 0 else "continuous",
        "polling_interval_seconds": 30 + (i % 30) * 10,
        "batch_size": 1 + i % 100,
        "skip_batch_submission": i % 13 == 0,
    }
    if i % 3 == 0:
        body["file_filters"] = {
            "include_patterns": ["*.mp4", f"*{i}*.mov"],
            "exclude_patterns": ["*/drafts/*"],
            "min_size_bytes": i,
            "max_size_bytes": 10_000_000 + i,
            "modified_after": "2025-01-01T00:00:00Z",
            "mime_types": ["video/*"],
        }
    if i % 4 == 0:
        body["schema_mapping"] = {
            "mappings": {
                "content": {"target_type": "blob", "source": {"type": "file"}},
                "title": {
                    "target_type": "field",
                    "source": {"type": "filename_regex", "pattern": r"^(.+)\.\w+$", "default": "untitled"},
                },
                "campaign": {
                    "target_type": "field",
                    "source": {"type": "tag", "key": "campaign"},
                    "transform": "lowercase",
                    "required": True,
                },
                "tier": {"target_type": "field", "source": {"type": "constant", "value": {"n": i}}},
            }
        }
    if i % 2 == 0:
        body["metadata"] = {"team": f"t{i % 7}", "created-in": "dashboard"}
    return BUCKETS[i % len(BUCKETS)], body, i % 5 == 0


def create_out_of_band(mixpeek: EmulatorProcess, count: int) -> list[str]:
    ids = []
    with mixpeek_api(mixpeek.url, EMULATOR_API_KEY) as api:
        for i in range(count):
            bucket, body, paused = out_of_band_sync(i)
            response = api.post(f"/v1/buckets/{bucket}/syncs", json=body)
            assert response.status_code == 200, response.text
            ids.append(response.json()["sync_config_id"])
            if paused:
                api.post(f"/v1/buckets/{bucket}/syncs/{ids[-1]}/pause").raise_for_status()
    return ids


def configuration(record: dict[str, Any]) -> dict[str, Any]:
    """A remote sync's configuration: everything but timestamps of writes and our marker keys."""
    kept = {k: v for k, v in record.items() if k not in ("updated_at",)}
    kept["metadata"] = {
        k: v for k, v in (record.get("metadata") or {}).items() if not k.startswith(RESERVED_METADATA_PREFIX)
    }
    return kept


def all_ready(cluster: ControlPlane, namespace: str) -> bool:
    return kubectl_mixpeek(cluster, "status", "-n", namespace).returncode == 0


@pytest.mark.timeout(1200)
def test_import_500_out_of_band_syncs_and_apply_them_writes_only_markers(
    cluster: ControlPlane,
    crd_installed: None,
    credentials: str,
    mixpeek: EmulatorProcess,
    start_operator: OperatorFactory,
    namespace: str,
    tmp_path: Path,
) -> None:
    count = 500
    ids = create_out_of_band(mixpeek, count)
    # One sync already managed by some BucketSync: not imported unless asked.
    with mixpeek_api(mixpeek.url, EMULATOR_API_KEY) as api:
        owned = api.post(
            "/v1/buckets/bkt_demo/syncs",
            json={"connection_id": "conn_s3_demo", "source_path": "owned", "metadata": {OWNER_UID_KEY: "u"}},
        ).json()["sync_config_id"]
    before = {r["sync_config_id"]: configuration(r) for r in mixpeek.admin.list_syncs()}
    assert sum(r["paused"] for r in before.values()) == count // 5
    mixpeek.admin.clear_requests()

    bucket_flags = [arg for bucket in BUCKETS for arg in ("--bucket", bucket)]
    started = time.monotonic()
    imported = kubectl_mixpeek(
        cluster,
        "import",
        "--secret",
        credentials,
        "-n",
        namespace,
        *bucket_flags,
        "--dir",
        str(tmp_path / "out"),
        "--deletion-policy",
        "Orphan",
    )
    import_seconds = time.monotonic() - started
    assert imported.returncode == 0, imported.stderr
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert len(files) == count
    assert f"skipped {owned}" in imported.stderr
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert {d["spec"]["syncConfigId"] for d in docs} == set(ids)
    assert all(d["spec"]["deletionPolicy"] == "Orphan" for d in docs)

    # Stable: the same names (and manifests) on every run, here on stdout.
    again = kubectl_mixpeek(
        cluster,
        "import",
        "--secret",
        credentials,
        "-n",
        namespace,
        *bucket_flags,
        "--deletion-policy",
        "Orphan",
    )
    assert again.returncode == 0, again.stderr
    by_name = {d["metadata"]["name"]: d for d in docs}
    again_by_name = {d["metadata"]["name"]: d for d in yaml.safe_load_all(again.stdout)}
    assert again_by_name.keys() == by_name.keys()
    differing = [name for name in by_name if again_by_name[name] != by_name[name]]
    assert differing == [], (by_name[differing[0]], again_by_name[differing[0]])
    assert writes_except_reads(endpoint_counts(mixpeek.admin)) == NO_WRITES  # import only reads

    # Nothing to change remotely but the marker, says the plan too.
    sample = tmp_path / "sample.yaml"
    # The import's own files, as a user would pass them (not re-dumped: PyYAML writes a key `n`
    # bare, which kubectl, and so the plan, read as YAML 1.1's false).
    sample.write_text("\n---\n".join(f.read_text() for f in files[:20]))
    planned = kubectl_mixpeek(cluster, "diff", "-f", str(sample), "-o", "json")
    assert planned.returncode == 1, planned.stderr  # objects would be created
    plans = json.loads(planned.stdout)
    assert {(p["remote"], tuple(p["calls"])) for p in plans} == {("adopt", ("update",))}, json.dumps(
        [p for p in plans if p["remote"] != "adopt"][:2]
    )

    mixpeek.admin.clear_requests()
    start_operator(namespace)
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(tmp_path / "out"), timeout=600)
    applied_seconds = time.monotonic() - started
    wait_for(lambda: all_ready(cluster, namespace), 600, interval=2, what="every imported object Ready")
    ready_seconds = time.monotonic() - started

    writes = writes_except_reads(endpoint_counts(mixpeek.admin))
    assert writes == {**NO_WRITES, "update": count}  # one marker PATCH per object, nothing else
    after = {r["sync_config_id"]: r for r in mixpeek.admin.list_syncs()}
    changed = [i for i in ids if configuration(after[i]) != before[i]]
    assert changed == [], [
        (key, before[changed[0]].get(key), configuration(after[changed[0]]).get(key))
        for key in before[changed[0]]
        if before[changed[0]].get(key) != configuration(after[changed[0]]).get(key)
    ]
    assert all(after[i]["metadata"].get(OWNER_UID_KEY) for i in ids)
    assert after[owned]["metadata"] == {OWNER_UID_KEY: "u"}  # skipped, so untouched
    print(
        f"\nimport figures: {count} syncs over {len(BUCKETS)} buckets ({count // 5} paused); "
        f"import {import_seconds:.1f} s; kubectl apply {applied_seconds:.1f} s; all Ready after "
        f"{ready_seconds:.1f} s; remote writes {writes}; reads: "
        f"{endpoint_counts(mixpeek.admin)['list']} list, {endpoint_counts(mixpeek.admin)['get']} get"
    )


def manifest_file(tmp_path: Path, name: str, *docs: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(list(docs)))
    return path


def test_the_plan_is_what_the_operator_then_does(
    cluster: ControlPlane,
    crd_installed: None,
    credentials: str,
    mixpeek: EmulatorProcess,
    objects: Objects,
    start_operator: OperatorFactory,
    namespace: str,
    tmp_path: Path,
) -> None:
    start_operator(namespace)
    base = {n: bucketsync(n, batchSize=10) for n in ("patched", "paused", "recreated", "same", "triggered")}
    for manifest in base.values():
        objects.create(manifest)
    for name in base:
        objects.wait_ready(name)

    def changed(name: str, **spec: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(base[name]))
        body["metadata"]["namespace"] = namespace
        body["spec"].update(spec)
        return body

    triggered = changed("triggered")
    triggered["metadata"]["annotations"] = {"mixpeek.com/trigger-requested-at": "now-1"}
    cases = [
        (changed("patched", batchSize=25, metadata={"team": "a"}), "patch", ["update"], 1),
        (changed("paused", paused=True), "pause", ["pause"], 1),
        (changed("recreated", sourcePath="demo-bucket/other"), "recreate", ["delete", "create"], 1),
        (changed("same"), "none", [], 0),
        (triggered, "none", ["trigger"], 1),
        (
            {
                **bucketsync("brand-new", paused=True),
                "metadata": {"name": "brand-new", "namespace": namespace},
            },
            "create",
            ["create", "pause"],
            1,
        ),
    ]
    for manifest, remote, calls, exit_code in cases:
        name = manifest["metadata"]["name"]
        file = manifest_file(tmp_path, name, manifest)
        planned = kubectl_mixpeek(cluster, "diff", "-f", str(file), "-o", "json")
        assert planned.returncode == exit_code, (name, planned.stdout, planned.stderr)
        plan = json.loads(planned.stdout)[0]
        assert (plan["remote"], plan["calls"]) == (remote, calls), name
        human = kubectl_mixpeek(cluster, "diff", "-f", str(file))
        assert name in human.stdout

        mixpeek.admin.clear_requests()
        cluster.kubectl("apply", "-f", str(file))
        objects.wait_ready(name, timeout=60)
        if calls == ["trigger"]:
            echoed = lambda: (objects.get("triggered") or {})["status"].get("lastHandledTriggerAt") == "now-1"  # noqa: E731
            wait_for(echoed, 30, what="the trigger's echo")
        made = writes_except_reads(endpoint_counts(mixpeek.admin))
        assert made == {**NO_WRITES, **Counter(calls)}, name  # the plan's calls, no more, no fewer
        after = kubectl_mixpeek(cluster, "diff", "-f", str(file), "-o", "json")
        assert (after.returncode, json.loads(after.stdout)[0]["calls"]) == (0, []), name
    assert (
        "batchSize"
        in kubectl_mixpeek(
            cluster, "diff", "-f", str(manifest_file(tmp_path, "again", changed("patched", batchSize=30)))
        ).stdout
    )

    # A manifest the API server refuses: its message, exit 2; the change planned nowhere.
    rejected = changed("same", replacementPolicy="Reject")
    objects.apply(rejected)
    objects.wait_ready("same")
    refused = kubectl_mixpeek(
        cluster,
        "diff",
        "-f",
        str(
            manifest_file(
                tmp_path, "refused", {**rejected, "spec": {**rejected["spec"], "sourcePath": "elsewhere"}}
            )
        ),
    )
    assert refused.returncode == 2
    assert "spec.sourcePath is create-only" in refused.stdout


def test_status_and_the_verbs(
    cluster: ControlPlane,
    crd_installed: None,
    credentials: str,
    mixpeek: EmulatorProcess,
    objects: Objects,
    start_operator: OperatorFactory,
    namespace: str,
) -> None:
    operator = start_operator(namespace)
    for name in ("alpha", "beta"):
        objects.create({**bucketsync(name), "metadata": {"name": name, "labels": {"app": "media"}}})
    objects.create(bucketsync("broken", credentialsRef={"name": "no-such-secret"}))
    objects.wait_ready("alpha")
    objects.wait_ready("beta")
    objects.wait_stalled("broken", "SecretNotFound")

    shown = kubectl_mixpeek(cluster, "status", "alpha", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    for expected in (
        "Ready",
        "Conditions:",
        "Secret mixpeek-credentials: present, in-use mark set",
        "Remote sync:",
        sync_id(objects.get("alpha")) or "?",
        "Drift: none",
        "Events:",
        "Created",
    ):
        assert expected in shown.stdout, (expected, shown.stdout)
    assert EMULATOR_API_KEY not in shown.stdout

    broken = kubectl_mixpeek(cluster, "status", "broken", "-n", namespace)
    assert broken.returncode == 1
    assert "Secret no-such-secret: MISSING" in broken.stdout
    assert "SecretNotFound" in broken.stdout

    table = kubectl_mixpeek(cluster, "status", "-n", namespace)
    assert table.returncode == 1  # one object is not Ready
    rows = table.stdout.splitlines()
    assert rows[1].split()[1] == "broken"  # not-Ready first
    assert (
        json.loads(kubectl_mixpeek(cluster, "status", "-n", namespace, "-o", "json").stdout)[0]["name"]
        == "broken"
    )
    objects.patch("broken", {"spec": {"deletionPolicy": "Orphan"}})  # no credentials needed to go
    objects.delete("broken")
    wait_for(lambda: objects.get("broken") is None, 30, what="broken deleted")

    paused = kubectl_mixpeek(
        cluster, "pause", "-l", "app=media", "-n", namespace, "--wait", "--timeout", "60"
    )
    assert paused.returncode == 0, paused.stderr
    for name in ("alpha", "beta"):
        assert mixpeek.admin.get_sync(sync_id(objects.get(name)) or "")["paused"] is True
    resumed = kubectl_mixpeek(cluster, "resume", "alpha", "beta", "-n", namespace, "--wait")
    assert resumed.returncode == 0, resumed.stderr
    assert mixpeek.admin.get_sync(sync_id(objects.get("alpha")) or "")["paused"] is False

    for verb, field in (("trigger", "lastHandledTriggerAt"), ("reconcile", "lastHandledReconcileAt")):
        mixpeek.admin.clear_requests()
        first = kubectl_mixpeek(cluster, verb, "alpha", "-n", namespace, "--wait")
        assert first.returncode == 0, first.stderr
        echo = (objects.get("alpha") or {})["status"][field]
        second = kubectl_mixpeek(cluster, verb, "--all", "-n", namespace, "--wait")
        assert second.returncode == 0, second.stderr
        assert (objects.get("alpha") or {})["status"][field] != echo  # a fresh value each time
        if verb == "trigger":
            assert endpoint_counts(mixpeek.admin)["trigger"] == 3  # alpha twice, beta once

    assert kubectl_mixpeek(cluster, "status", "-n", namespace).returncode == 0
    operator.stop()  # nobody handles requests now: --wait gives up with its own exit code
    timed_out = kubectl_mixpeek(cluster, "trigger", "alpha", "-n", namespace, "--wait", "--timeout", "2")
    assert timed_out.returncode == 6, timed_out.stderr
    assert "timed out after 2s" in timed_out.stderr
    missing = kubectl_mixpeek(cluster, "pause", "nope", "-n", namespace)
    assert (missing.returncode, missing.stderr.count("\n")) == (2, 1)


def test_errors_are_one_line_with_distinct_exit_codes(
    cluster: ControlPlane,
    crd_installed: None,
    api_client: k8s.ApiClient,
    credentials: str,
    mixpeek: EmulatorProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("apiVersion: v1\nclusters: [\n")
    unreachable = tmp_path / "unreachable"
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    unreachable.write_text(yaml.safe_dump(config))
    make_secret(api_client, namespace, "wrong-key", api_key=WRONG_API_KEY, base_url=mixpeek.url)
    make_secret(
        api_client,
        namespace,
        "no-namespace",
        api_key=EMULATOR_API_KEY,
        base_url=mixpeek.url,
        mixpeek_namespace=None,
    )
    importing = ("import", "-n", namespace, "--bucket", "bkt_demo")
    cases = [
        (("status", "-A"), garbage, 3, "kubeconfig"),
        (("status", "-A"), unreachable, 3, "cannot reach the Kubernetes API server"),
        ((*importing, "--secret", "no-such-secret"), None, 4, "not found"),
        ((*importing, "--secret", "no-namespace"), None, 4, "no Mixpeek namespace"),
        ((*importing, "--secret", "wrong-key"), None, 5, "Mixpeek rejected the API key"),
        (("status", "nope", "-n", namespace), None, 2, "not found"),
    ]
    for args, kubeconfig, code, text in cases:
        result = kubectl_mixpeek(cluster, *args, kubeconfig=kubeconfig)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
        assert result.stderr.startswith("error: "), result.stderr
        assert text in result.stderr, result.stderr
        assert WRONG_API_KEY not in result.stderr
        assert EMULATOR_API_KEY not in result.stderr


def test_an_exec_plugin_kubeconfig_and_kubectl_finding_the_plugin(
    cluster: ControlPlane, crd_installed: None, objects: Objects, namespace: str, tmp_path: Path
) -> None:
    objects.create(bucketsync("via-exec"))
    env = {"PLUGIN_CERT": str(cluster.pki.admin_cert), "PLUGIN_KEY": str(cluster.pki.admin_key)}
    kubeconfig = exec_kubeconfig(tmp_path, cluster.server, cluster.pki.ca_cert, env)
    shown = kubectl_mixpeek(cluster, "status", "via-exec", "-n", namespace, kubeconfig=kubeconfig)
    assert shown.returncode == 1, shown.stderr  # no operator here: not Ready, but read through the plugin
    assert "BucketSync " + namespace + "/via-exec" in shown.stdout
    assert len(plugin_calls(tmp_path)) >= 1

    # kubectl itself finds the console script on PATH and runs it.
    path_env = {**os.environ, "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    kubectl = str(cluster.bin_dir / "kubectl")
    listed = subprocess.run(
        [kubectl, "plugin", "list"], capture_output=True, text=True, env=path_env, check=False
    )
    assert str(PLUGIN) in listed.stdout, listed.stdout + listed.stderr
    via_kubectl = subprocess.run(
        [kubectl, "mixpeek", "--kubeconfig", str(cluster.kubeconfig), "status", "via-exec", "-n", namespace],
        capture_output=True,
        text=True,
        env=path_env,
        check=False,
    )
    assert via_kubectl.returncode == 1
    assert "via-exec" in via_kubectl.stdout


@pytest.mark.timeout(900)
def test_status_table_at_1000_objects_is_one_list(
    cluster: ControlPlane, crd_installed: None, namespace: str
) -> None:
    """A measurement, printed (not asserted): `status -A` over 1,000 BucketSyncs."""
    count = 1000
    items = [
        {**bucketsync(f"bench-{i:04d}"), "metadata": {"name": f"bench-{i:04d}", "namespace": namespace}}
        for i in range(count)
    ]
    cluster.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=600,
    )
    timings = []
    for _ in range(3):
        started = time.monotonic()
        result = kubectl_mixpeek(cluster, "status", "-A")
        timings.append(time.monotonic() - started)
        assert result.returncode == 1  # nothing reconciles them here: not Ready
        assert len([line for line in result.stdout.splitlines() if namespace in line]) == count
    started = time.monotonic()
    cluster.kubectl("get", "bucketsyncs", "-A")
    kubectl_seconds = time.monotonic() - started

    async def list_and_render() -> float:
        args = argparse.Namespace(kubeconfig=str(cluster.kubeconfig), context=None, namespace=None)
        session = open_session(args)
        session.all_namespaces = True
        async with session.kube:
            started = time.monotonic()
            render_table(await list_bucketsyncs(session))
            return time.monotonic() - started

    in_process = [asyncio.run(list_and_render()) for _ in range(3)]
    print(
        f"\nstatus -A at {count} objects (whole command, incl. Python start): best {min(timings):.2f} s, "
        f"runs {', '.join(f'{t:.2f}' for t in timings)}; "
        f"of which the LIST and the table (in process): best {min(in_process):.3f} s; "
        f"`kubectl get bucketsyncs -A`: {kubectl_seconds:.2f} s"
    )


def ring_lease(
    namespace: str, name: str, ring: str, holder: str, renewed: datetime, *, labels_mode: bool = True
) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {RING_LABEL: ring},
            "annotations": {shards.MODE_ANNOTATION: "labels"} if labels_mode else {},
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 300,  # live for the whole test, whatever the machine's load
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


def test_status_shows_the_shard_map_of_label_shards(
    cluster: ControlPlane, crd_installed: None, namespace: str
) -> None:
    """Leases and labelled objects written by hand (no operator): the map the plugin prints."""
    ring = f"ring-{namespace}"
    now, long_ago = datetime.now(UTC), datetime.now(UTC) - timedelta(hours=1)
    leases = [
        ring_lease(namespace, f"{ring}-pod-a", ring, "pod-a", now),
        ring_lease(namespace, f"{ring}-pod-b", ring, "pod-b", now),
        ring_lease(namespace, f"{ring}-pod-c", ring, "pod-c", long_ago),  # expired
        ring_lease(namespace, f"{ring}-pod-old", ring, "pod-old", now, labels_mode=False),  # mid-upgrade
        # The assigner's Lease carries no ring label: it is not a member.
        {
            **ring_lease(namespace, f"{ring}-assigner", ring, "pod-b", now),
            "metadata": {"name": f"{ring}-assigner", "namespace": namespace},
        },
    ]
    owners = ["pod-a"] * 3 + ["pod-b"] * 2 + ["pod-c", "pod-gone", ""]
    items = []
    for i, owner in enumerate(owners):
        labels = {shards.OWNER_LABEL: owner} if owner else {}
        if i == 4:
            labels[shards.DRAIN_LABEL] = "pod-a"
        items.append(
            {**bucketsync(f"s{i}"), "metadata": {"name": f"s{i}", "namespace": namespace, "labels": labels}}
        )
    listed = {"apiVersion": "v1", "kind": "List", "items": [*leases, *items]}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(listed))

    mapped = kubectl_mixpeek(cluster, "status", "--shards", "-n", namespace, "--ring", ring)
    assert mapped.returncode == 1, mapped.stderr  # pod-c expired, pod-gone unknown, s7 unassigned
    lines = mapped.stdout.splitlines()
    assert lines[0].startswith(f"Shard ring {ring} (Leases in namespace {namespace}), label shards")
    rows = {line.split()[0]: line.split() for line in lines[2:7]}
    assert rows["pod-a"][1:2] + rows["pod-a"][3:7] == ["live", "labels", "3", "0", "1"]
    assert rows["pod-b"][1:2] + rows["pod-b"][3:] == ["live", "labels", "2", "1", "0", "yes"]
    assert rows["pod-c"][1:2] + rows["pod-c"][3:5] == ["expired", "labels", "1"]
    assert rows["pod-old"][3:5] == ["rendezvous", "0"]
    assert rows["pod-gone"][:3] == ["pod-gone", "no", "member"]
    assert f"Assigner: pod-b (Lease {ring}-assigner" in mapped.stdout
    assert "Objects: 8; unassigned (no owner label) 1; owner not a live member 2; draining 1" in mapped.stdout

    as_json = json.loads(
        kubectl_mixpeek(cluster, "status", "--shards", "-n", namespace, "--ring", ring, "-o", "json").stdout
    )
    assert [(m["identity"], m["objects"]) for m in as_json[0]["members"]] == [
        ("pod-a", 3), ("pod-b", 2), ("pod-c", 1), ("pod-old", 0)
    ]  # fmt: skip

    # The table, then the map (found without --ring: every ring with a label-mode member).
    table = kubectl_mixpeek(cluster, "status", "-n", namespace, "--ring-namespace", namespace)
    assert table.returncode == 1  # nothing reconciles: not Ready
    head, _, tail = table.stdout.partition("\n\n")
    assert len(head.splitlines()) == 1 + len(owners)
    assert tail.startswith(f"Shard ring {ring} ")

    # Without label-mode members the view is as it was: no map.
    cluster.kubectl("-n", namespace, "delete", "lease", f"{ring}-pod-a", f"{ring}-pod-b", f"{ring}-pod-c")
    plain = kubectl_mixpeek(cluster, "status", "-n", namespace, "--ring-namespace", namespace)
    assert "Shard ring" not in plain.stdout
    assert "\n\n" not in plain.stdout
    missing = kubectl_mixpeek(cluster, "status", "--shards", "-n", namespace, "--ring", ring)
    assert (missing.returncode, missing.stderr.count("\n")) == (2, 1)
    assert "no label-shard ring found" in missing.stderr
