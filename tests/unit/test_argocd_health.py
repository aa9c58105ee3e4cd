"""The Argo CD health check (docs/argocd/health.lua), run by a real Lua 5.1 interpreter (the
language version of Argo CD's gopher-lua) against the table of cases in Argo CD's upstream
format: docs/argocd/health_test.yaml + testdata/. The same objects also go through the Flux
CEL fallback of docs/gitops.md (a real CEL interpreter), which must agree with kstatus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import pytest
import yaml
from lupa import lua51

from mixpeek_operator.crd import build_crd

ARGOCD = Path(__file__).resolve().parents[2] / "docs" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
ARGOCD_STATES = {"Healthy", "Progressing", "Degraded", "Suspended"}
HEALTH_KEY = "resource.customizations.health.mixpeek.com_BucketSync"
IGNORE_KEY = "resource.customizations.ignoreResourceUpdates.mixpeek.com_BucketSync"


def evaluate(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run a health script the way Argo CD does: `obj` as a global, the result returned."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    # Argo CD's sandbox has no I/O, OS or module loading; the script must not need them.
    for unsafe in ("io", "os", "package", "require", "dofile", "loadfile", "load", "debug"):
        lua.globals()[unsafe] = None
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return {str(key): str(value) for key, value in result.items()}


def load(case: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    return obj


def case_id(case: dict[str, Any]) -> str:
    return Path(case["inputPath"]).stem


def test_the_script_is_lua_5_1() -> None:
    lua = lua51.LuaRuntime()
    assert lua.eval("_VERSION") == "Lua 5.1"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_health_check_case(case: dict[str, Any]) -> None:
    assert evaluate(HEALTH_LUA.read_text(), load(case)) == case["healthStatus"]


def test_cases_cover_every_testdata_file_and_every_state() -> None:
    referenced = {case["inputPath"] for case in CASES}
    on_disk = {f"testdata/{path.name}" for path in (ARGOCD / "testdata").iterdir()}
    assert referenced == on_disk
    assert {case["healthStatus"]["status"] for case in CASES} == ARGOCD_STATES


def test_required_scenarios_are_covered() -> None:
    expected = {
        "progressing_no_status": "Progressing",
        "progressing_generation_not_observed": "Progressing",
        "healthy": "Healthy",
        "suspended_paused": "Suspended",
        "degraded_stalled": "Degraded",
        "suspended_reconcile_paused": "Suspended",
        "progressing_reconciling": "Progressing",
        "progressing_deleting": "Progressing",
    }
    by_name = {case_id(case): case["healthStatus"]["status"] for case in CASES}
    assert {name: by_name.get(name) for name in expected} == expected


def test_testdata_objects_are_valid_bucketsyncs() -> None:
    """Testdata must look like what the API server stores: only fields the CRD declares."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def check(value: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or node.get("type") != "object" or "properties" not in node:
            return
        unknown = set(value) - set(node["properties"])
        assert not unknown, f"{path}: fields not in the CRD: {unknown}"
        for key, sub in value.items():
            child = node["properties"][key]
            items = child.get("items")
            for element in sub if isinstance(sub, list) and items else [sub]:
                check(element, items if isinstance(sub, list) else child, f"{path}.{key}")

    for case in CASES:
        obj = load(case)
        assert obj["apiVersion"] == "mixpeek.com/v1alpha1"
        assert obj["kind"] == "BucketSync"
        check({k: v for k, v in obj.items() if k != "metadata"}, schema, case["inputPath"])


def test_argocd_cm_snippet_carries_the_same_script() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_ignored_update_paths_exist_and_do_not_feed_health() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    pointers = yaml.safe_load(patch["data"][IGNORE_KEY])["jsonPointers"]
    assert pointers == ["/status/remote", "/status/metrics"]
    status = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    script = HEALTH_LUA.read_text()
    for pointer in pointers:
        field = pointer.rsplit("/", 1)[1]
        assert field in status["properties"]
        # Ignoring an update is only safe for fields the health check never reads.
        assert f"status.{field}" not in script


# --- the same objects through the Flux CEL fallback of docs/gitops.md --------------------------


def flux_health_exprs() -> dict[str, str]:
    """The `healthCheckExprs` entry documented in docs/gitops.md."""
    text = (ARGOCD.parent / "gitops.md").read_text()
    blocks = [part.partition("```")[0] for part in text.split("```yaml\n")[1:]]
    (block,) = [b for b in blocks if "healthCheckExprs" in b]
    (entry,) = yaml.safe_load(block)["spec"]["healthCheckExprs"]
    assert (entry["apiVersion"], entry["kind"]) == ("mixpeek.com/v1alpha1", "BucketSync")
    return {key: entry[key] for key in ("inProgress", "failed", "current")}


def flux_status(exprs: dict[str, str], obj: dict[str, Any]) -> str:
    """Flux's evaluation order: inProgress, failed, current; no match (or an error) waits."""
    for outcome, key in (("InProgress", "inProgress"), ("Failed", "failed"), ("Current", "current")):
        try:
            if cel.evaluate(exprs[key], obj) is True:
                return outcome
        except Exception:  # Flux treats a failing expression (e.g. a missing field) as not ready
            return "InProgress"
    return "InProgress"


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' generic rules for a custom resource (sigs.k8s.io/cli-utils status.Compute)."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"].get("generation"):
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    if conditions.get("Ready") in ("False", "Unknown"):
        return "InProgress"
    return "Current"


# Deletion is left out: Flux and kstatus handle it themselves (Terminating).
@pytest.mark.parametrize(
    "case", [c for c in CASES if "deletionTimestamp" not in load(c)["metadata"]], ids=case_id
)
def test_flux_cel_fallback_agrees_with_kstatus(case: dict[str, Any]) -> None:
    obj = load(case)
    got = flux_status(flux_health_exprs(), obj)
    if "status" not in obj:
        # kstatus' known corner case: no status at all is "Current". The CRD's status default
        # makes it impossible for a stored object; the CEL waits instead.
        assert (kstatus(obj), got) == ("Current", "InProgress")
    else:
        assert got == kstatus(obj)
