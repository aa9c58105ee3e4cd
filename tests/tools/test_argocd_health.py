"""The Argo CD health check (docs/argocd/health.lua) run by Argo CD's own code against the
table of cases in Argo CD's upstream format: docs/argocd/health_test.yaml + testdata/.

hack/argocd-health (built from the Go module proxy, cached) loads docs/argocd/argocd-cm.yaml
as shipped through Argo CD's settings manager and computes health through gitops-engine's
entry point, which answers deleting objects itself and runs the script in Argo CD's
gopher-lua sandbox (base, table and a safe os library only, unless useOpenLibs is set).
The same objects go through both kstatus libraries (hack/kstatus) and the Flux CEL fallback
of docs/gitops.md (a real CEL interpreter), which must agree with kstatus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import pytest
import yaml

from hack.gotools import argocd_health, kstatus
from mixpeek_operator.crd import build_crd

ARGOCD = Path(__file__).resolve().parents[2] / "docs" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
ARGOCD_CM = ARGOCD / "argocd-cm.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
ARGOCD_STATES = {"Healthy", "Progressing", "Degraded", "Suspended"}
HEALTH_KEY = "resource.customizations.health.mixpeek.com_BucketSync"
IGNORE_KEY = "resource.customizations.ignoreResourceUpdates.mixpeek.com_BucketSync"


def load(case: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    return obj


def case_id(case: dict[str, Any]) -> str:
    return Path(case["inputPath"]).stem


@pytest.fixture(scope="module")
def argocd_results() -> dict[str, dict[str, str]]:
    """Argo CD's answer for every case, from one run of its code."""
    results = argocd_health([load(case) for case in CASES], ARGOCD_CM)
    return {case_id(case): result for case, result in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_health_check_case(case: dict[str, Any], argocd_results: dict[str, dict[str, str]]) -> None:
    assert argocd_results[case_id(case)] == case["healthStatus"]


@pytest.fixture(scope="module")
def script_results() -> dict[str, dict[str, str]]:
    """The script's own answer for every case, as Argo CD's resource-customization tests get it."""
    results = argocd_health([load(case) for case in CASES], ARGOCD_CM, script_only=True)
    return {case_id(case): result for case, result in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_script_alone_passes_each_case(
    case: dict[str, Any], script_results: dict[str, dict[str, str]]
) -> None:
    """health_test.yaml holds in Argo CD's upstream harness too, where no controller answers
    first: an object being deleted is "Pending deletion" by the script's own logic."""
    assert script_results[case_id(case)] == case["healthStatus"]


def test_without_its_check_argo_cd_gives_a_bucketsync_no_health(tmp_path: Path) -> None:
    """Why the patch is needed at all: Argo CD's own answer for the kind with no script."""
    bare = yaml.safe_load(ARGOCD_CM.read_text())
    bare["data"] = {}
    config = tmp_path / "argocd-cm.yaml"
    config.write_text(yaml.safe_dump(bare))
    (result,) = argocd_health([load(CASES[0])], config)
    assert result == {"status": "", "message": "no health check"}


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


@pytest.fixture(scope="module")
def kstatus_results() -> dict[str, dict[str, dict[str, str]]]:
    """Both kstatus libraries' answer for every case, from one run of their code."""
    results = kstatus([load(case) for case in CASES])
    return {case_id(case): result for case, result in zip(CASES, results, strict=True)}


def test_both_kstatus_libraries_agree(kstatus_results: dict[str, dict[str, dict[str, str]]]) -> None:
    for name, result in kstatus_results.items():
        assert result["sigs"] == result["fluxcd"], name


# Deletion is left out: Flux and kstatus handle it themselves (Terminating).
@pytest.mark.parametrize(
    "case", [c for c in CASES if "deletionTimestamp" not in load(c)["metadata"]], ids=case_id
)
def test_flux_cel_fallback_agrees_with_kstatus(
    case: dict[str, Any], kstatus_results: dict[str, dict[str, dict[str, str]]]
) -> None:
    obj = load(case)
    got = flux_status(flux_health_exprs(), obj)
    computed = kstatus_results[case_id(case)]["sigs"]["status"]
    if "status" not in obj:
        # kstatus' known corner case: no status at all is "Current". The CRD's status default
        # makes it impossible for a stored object; the CEL waits instead.
        assert (computed, got) == ("Current", "InProgress")
    else:
        assert got == computed
