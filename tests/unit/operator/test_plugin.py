"""kubectl-mixpeek without a cluster: names, rendering, request values, parsing, exit codes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import BucketSyncSpec, DeletionPolicy
from mixpeek_operator.plugin import cli, diff, import_cmd, requests, status
from mixpeek_operator.plugin.session import ExitCode, PluginError, age, dump, table
from tests.unit.operator.test_desired import MINIMAL, served, spec_of

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def remote(sync_id: str, source_path: str = "demo-bucket/videos", **fields: Any) -> Any:
    return served(
        desired.create_request(spec_of(MINIMAL, sourcePath=source_path), {}), sync_config_id=sync_id, **fields
    )


@pytest.mark.parametrize(
    "source_path",
    ["demo-bucket/videos", "/sites/Marketing/Shared Documents/Q1 ✓", "DB.SCHEMA.TABLE", "___", "a" * 300],
)
def test_object_names_are_dns_labels_stable_and_unique(source_path: str) -> None:
    first = import_cmd.object_name(remote("sync_AbCdEf0123456789", source_path))
    again = import_cmd.object_name(remote("sync_AbCdEf0123456789", source_path))
    other_case = import_cmd.object_name(remote("sync_abcdef0123456789", source_path))

    assert DNS_LABEL.match(first), first
    assert len(first) <= 63
    assert first == again
    assert first != other_case  # ids differing only in case still get their own object


def test_the_manifest_is_the_inverse_mapping_with_import_flags() -> None:
    item = import_cmd.manifest(
        remote("sync_1", paused=True, metadata={"team": "a", "mixpeek-operator.uid": "x"}),
        "media",
        "creds",
        None,
        DeletionPolicy.ORPHAN,
    )
    assert item["metadata"]["namespace"] == "media"
    assert item["metadata"]["annotations"] == {import_cmd.IMPORTED_FROM_ANNOTATION: "bkt_demo/sync_1"}
    spec = item["spec"]
    assert spec["syncConfigId"] == "sync_1"
    assert spec["paused"] is True
    assert spec["metadata"] == {"team": "a"}
    assert spec["credentialsRef"] == {"name": "creds"}
    assert spec["deletionPolicy"] == "Orphan"
    assert "managementPolicy" not in spec
    assert "replacementPolicy" not in spec
    BucketSyncSpec.model_validate(spec)  # what the CRD's model accepts


def obj(name: str, ready: str | None, generation: int = 1, observed: int = 1, **extra: Any) -> dict[str, Any]:
    conditions = (
        [] if ready is None else [{"type": "Ready", "status": ready, "reason": "R" + name, "message": "m"}]
    )
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": generation},
        "spec": {},
        "status": {"observedGeneration": observed, "conditions": conditions, **extra},
    }


def test_the_table_puts_not_ready_first() -> None:
    rendered = status.render_table([obj("a-ready", "True"), obj("b-failed", "False"), obj("c-new", None)])
    names = [line.split()[1] for line in rendered.splitlines()[1:]]
    assert names == ["b-failed", "c-new", "a-ready"]
    assert rendered.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "READY"]


def test_ready_for_an_older_generation_is_not_ready() -> None:
    rendered = status.render_table([obj("stale", "True", generation=2, observed=1)])
    assert rendered.splitlines()[1].split()[2] == "False"


def test_table_columns_line_up() -> None:
    assert table(["A", "LONGER"], [["xxxxx", "1"], ["y", "22"]]) == "A       LONGER\nxxxxx   1\ny       22\n"


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=5), "5s"),
        (timedelta(minutes=3), "3m"),
        (timedelta(hours=5), "5h"),
        (timedelta(days=3), "3d"),
    ],
)
def test_ages_read_like_kubectl(delta: timedelta, expected: str) -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert age((now - delta).isoformat(), now) == expected
    assert age(None) == "<unknown>"


def test_request_values_are_fresh_each_time() -> None:
    first, value1 = requests.request_for("trigger")
    second, value2 = requests.request_for("trigger")
    assert value1 != value2
    assert first["metadata"]["annotations"] != second["metadata"]["annotations"]
    assert requests.request_for("pause") == ({"spec": {"paused": True}}, "")
    assert requests.request_for("resume") == ({"spec": {"paused": False}}, "")


def test_a_request_is_handled_when_its_echo_appears_or_the_generation_is_ready() -> None:
    echoed = obj("x", "True", lastHandledTriggerAt="v1")
    assert requests.handled(echoed, "trigger", "v1", 1) == (True, None)
    assert requests.handled(echoed, "trigger", "v2", 1) == (False, None)
    assert requests.handled(obj("x", "True", generation=2, observed=2), "pause", "", 2) == (True, None)
    assert requests.handled(obj("x", "True", generation=2, observed=1), "pause", "", 2) == (False, None)
    stalled = obj("x", "False", generation=2, observed=2)
    stalled["status"]["conditions"].append(
        {"type": "Stalled", "status": "True", "reason": "AuthFailed", "message": "no"}
    )
    assert requests.handled(stalled, "pause", "", 2) == (True, "Stalled: AuthFailed: no")


def test_diff_reads_documents_and_lists_and_refuses_other_kinds(tmp_path: Path) -> None:
    file = tmp_path / "m.yaml"
    doc = {"apiVersion": "mixpeek.com/v1alpha1", "kind": "BucketSync", "metadata": {"name": "a"}}
    file.write_text(yaml.safe_dump_all([doc, {"kind": "List", "items": [doc]}, None]))
    assert len(diff.read_manifests(file)) == 2
    file.write_text(yaml.safe_dump({"kind": "ConfigMap"}))
    with pytest.raises(PluginError, match="only BucketSync objects can be planned, found ConfigMap"):
        diff.read_manifests(file)


def test_a_bad_kubeconfig_is_one_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [")
    code = cli.main(["--kubeconfig", str(bad), "status", "-A"])
    err = capsys.readouterr().err
    assert code == ExitCode.KUBECONFIG == 3
    assert err.count("\n") == 1
    assert err.startswith("error: kubeconfig: cannot read kubeconfig")

    code = cli.main(["status", "-A", "--kubeconfig", str(tmp_path / "missing")])
    assert code == 3
    assert "no kubeconfig found" in capsys.readouterr().err


def test_an_unknown_context_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({"contexts": [], "clusters": [], "users": [], "current-context": "x"}))
    assert cli.main(["--kubeconfig", str(config), "--context", "nope", "status", "-A"]) == 3
    assert capsys.readouterr().err == "error: kubeconfig: kubeconfig has no context 'nope'\n"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["import"])  # --bucket is required
    assert exited.value.code == 2
    assert "--bucket" in capsys.readouterr().err


# --- the plan: the reconciler's decisions on a spec and a remote sync --------------------------

SCOPE = diff.ListingScope("fp", "default", "bkt_demo")


def planned(spec_changes: dict[str, Any], remote_sync: Any, *, recorded: Any = SCOPE) -> diff.ObjectPlan:
    plan = diff.ObjectPlan(namespace="ns", name="x")
    spec = spec_of(MINIMAL, **spec_changes)
    diff._plan_remote(plan, spec, OWNER_OF_X, remote_sync, recorded, SCOPE)
    return plan


OWNER_OF_X = desired.owner_metadata("uid-x", "ns", "x")


def owned(**fields: Any) -> Any:
    return served(desired.create_request(spec_of(MINIMAL), OWNER_OF_X), **fields)


def test_plan_nothing_for_a_converged_object() -> None:
    plan = planned({}, owned())
    assert (plan.remote, plan.calls, plan.fields) == ("none", [], [])


def test_plan_create_then_pause() -> None:
    assert (planned({"paused": True}, None).remote, planned({"paused": True}, None).calls) == (
        "create",
        ["create", "pause"],
    )


def test_plan_patch_lists_old_and_new_values() -> None:
    plan = planned({"batchSize": 25}, owned())
    assert (plan.remote, plan.calls) == ("patch", ["update"])
    assert plan.fields == [{"field": "spec.batchSize", "old": "50", "new": "25"}]


def test_plan_adopting_an_imported_sync_writes_the_marker_only() -> None:
    unowned = served(desired.create_request(spec_of(MINIMAL), {}), metadata={"team": "a"})
    spec = desired.spec_from_remote(unowned)
    plan = diff.ObjectPlan(namespace="ns", name="x")
    diff._plan_remote(plan, spec, OWNER_OF_X, unowned, SCOPE, SCOPE)
    assert (plan.remote, plan.calls, plan.fields) == ("adopt", ["update"], [])
    assert plan.notes == ["writes the ownership marker only"]


def test_plan_recreate_or_refuse_a_create_only_change() -> None:
    recreate = planned({"sourcePath": "elsewhere"}, owned())
    assert (recreate.remote, recreate.calls) == ("recreate", ["delete", "create"])
    assert recreate.fields[0]["field"] == "spec.sourcePath"
    refused = planned({"sourcePath": "elsewhere", "replacementPolicy": "Reject"}, owned())
    assert refused.remote == "refuse"
    assert "replacementPolicy is Reject" in (refused.error or "")
    moved = planned({}, owned(), recorded=diff.ListingScope("fp", "default", "bkt_media"))
    assert (moved.remote, moved.fields[0]["field"]) == ("recreate", "spec.bucketId")


def test_plan_pause_and_resume() -> None:
    assert planned({"paused": True}, owned()).calls == ["pause"]
    assert planned({}, owned(paused=True)).calls == ["resume"]
    assert planned({"batchSize": 5, "paused": True}, owned()).calls == ["update", "pause"]


def test_yaml_output_quotes_what_go_yaml_would_read_as_booleans() -> None:
    text = dump({"n": "y", "on": ["off", "No", "yes"], "name": "n1", "flag": True}, "yaml")
    assert text == "'n': 'y'\n'on':\n- 'off'\n- 'No'\n- 'yes'\nname: n1\nflag: true\n"
    assert yaml.safe_load(text) == {"n": "y", "on": ["off", "No", "yes"], "name": "n1", "flag": True}


def test_manifests_are_read_as_kubectl_reads_them(tmp_path: Path) -> None:
    file = tmp_path / "m.yaml"
    file.write_text("kind: BucketSync\nspec: {a: n, b: Y, c: 'n', d: on, e: no1}\n")
    assert diff.read_manifests(file)[0]["spec"] == {"a": False, "b": True, "c": "n", "d": True, "e": "no1"}
