"""The unit, packaging and hack tiers need neither Go nor a cluster (`make unit` and `make
packaging` run on a machine without Go): a test that builds a Go program belongs in tests/tools/,
one that needs the control plane in tests/integration/. The support modules those tiers import
(tests/support/) are held to the same rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
NO_GO_TIERS = ("unit", "packaging", "hack")
# What builds a Go program (hack/gotools.py, hack/k8sbuild.py's builders) or starts the
# control plane (the `cluster` fixture and those that depend on it, tests/conftest.py).
GO_BUILDERS = {"hack.gotools"}
K8SBUILD_BUILDERS = {"build_kubernetes", "build_node", "build_cni", "build_pause", "build_helm"}
CLUSTER_FIXTURES = {"cluster", "api_client", "crd_installed"}


def offences(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name in GO_BUILDERS]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in GO_BUILDERS:
                found.append(node.module)
            if node.module == "hack":
                found += [alias.name for alias in node.names if f"hack.{alias.name}" in GO_BUILDERS]
            if node.module == "hack.k8sbuild":
                found += [alias.name for alias in node.names if alias.name in K8SBUILD_BUILDERS]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [arg.arg for arg in node.args.args if arg.arg in CLUSTER_FIXTURES]
    return found


def no_go_modules() -> list[Path]:
    """Every module of the no-Go tiers, and each support module one of them imports."""
    tiers = [path for tier in NO_GO_TIERS for path in (TESTS / tier).rglob("*.py")]
    modules = {path for path in tiers if path.name != "__init__.py"}
    for path in list(modules):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.support."):
                modules.add(TESTS / "support" / f"{node.module.rsplit('.', 1)[1]}.py")
    return sorted(modules, key=lambda path: path.name)


@pytest.mark.parametrize("module", no_go_modules(), ids=lambda path: path.name)
def test_no_unit_test_builds_go_or_starts_a_cluster(module: Path) -> None:
    assert offences(module.read_text(encoding="utf-8")) == []


def test_the_check_catches_each_way_in() -> None:
    assert offences("from hack.gotools import kstatus") == ["hack.gotools"]
    assert offences("import hack.gotools") == ["hack.gotools"]
    assert offences("from hack import gotools") == ["gotools"]
    assert offences("from hack.k8sbuild import build_helm, kube_bin_dir") == ["build_helm"]
    assert offences("def test_x(cluster, tmp_path): pass") == ["cluster"]
    assert offences("from hack.k8sbuild import kube_bin_dir\ndef test_x(tmp_path): pass") == []
