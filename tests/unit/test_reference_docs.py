"""Generated and hand-written docs kept in step with the code: docs/reference.md (rendered
from the CRD by hack/gen_reference.py) and the README sections (every metric, every reason)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gen_reference
from mixpeek_operator.constants import Reason
from mixpeek_operator.crd import build_crd
from mixpeek_operator.metrics import OperatorMetrics


def leaf_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}"
        items = sub.get("items", {})
        values = sub.get("additionalProperties")
        yield from leaf_paths(sub, f"{path}.{name}")
        yield from leaf_paths(items, f"{path}.{name}[]")
        if isinstance(values, dict):
            yield from leaf_paths(values, f"{path}.{name}.<key>")


def test_reference_is_up_to_date() -> None:
    committed = gen_reference.REFERENCE_PATH.read_text(encoding="utf-8")
    assert committed == gen_reference.render(), (
        "docs/reference.md is stale: run `python hack/gen_reference.py`"
    )


def test_reference_documents_every_field_and_rule() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = gen_reference.render()
    for section in ("spec", "status"):
        paths = list(leaf_paths(schema["properties"][section], section))
        assert len(paths) > 20
        for path in paths:
            assert f"| `{path}` |" in text, path
    for rule in gen_reference._rules(schema, ""):
        assert gen_reference._cell(gen_reference._code(rule.rule["rule"])) in text


def test_readme_carries_the_same_reference() -> None:
    readme = gen_reference.README_PATH.read_text(encoding="utf-8")
    assert gen_reference.embed(readme, gen_reference.render()) == readme, (
        "the README's reference block is stale: run `python hack/gen_reference.py`"
    )
    assert "### spec" in readme.partition(gen_reference.README_START)[2]


def test_check_mode_detects_a_stale_file(tmp_path: Any) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text("old\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{gen_reference.README_START}\nold\n{gen_reference.README_END}\nrest\n")
    args = ["--output", str(stale), "--readme", str(readme)]
    assert gen_reference.main(["--check", *args]) == 1
    assert gen_reference.main(args) == 0
    assert gen_reference.main(["--check", *args]) == 0
    assert readme.read_text().startswith("intro\n")
    assert readme.read_text().endswith(f"{gen_reference.README_END}\nrest\n")


README_SECTIONS = gen_reference.REPO_ROOT / "README.md"


def test_readme_sections_list_every_metric() -> None:
    registry = OperatorMetrics().registry
    names = {family.name + ("_total" if family.type == "counter" else "") for family in registry.collect()}
    assert len(names) >= 10
    text = README_SECTIONS.read_text()
    assert {name for name in names if f"`{name}`" not in text} == set()


def test_readme_sections_explain_every_condition_reason() -> None:
    text = README_SECTIONS.read_text()
    troubleshooting = text.partition("## Troubleshooting by condition reason")[2].partition("\n## ")[0]
    assert {reason.value for reason in Reason if f"| `{reason.value}` |" not in troubleshooting} == set()
