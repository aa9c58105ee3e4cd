"""The generated pages kept in step with their sources: docs/reference.md (rendered from the
CRD by hack/gen_reference.py) and docs/values.md (from the chart's values.schema.json and
values.yaml)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from hack import gen_reference
from mixpeek_operator.crd import build_crd


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


def test_values_page_is_up_to_date() -> None:
    committed = gen_reference.VALUES_PATH.read_text(encoding="utf-8")
    assert committed == gen_reference.render_values(), (
        "docs/values.md is stale: run `python hack/gen_reference.py`"
    )


def schema_values(node: dict[str, Any], definitions: dict[str, Any], path: str = "") -> Iterator[str]:
    for name, sub in node.get("properties", {}).items():
        if "$ref" in sub:  # a shared definition: its properties are this value's
            sub = definitions[sub["$ref"].rsplit("/", 1)[-1]]
        yield f"{path}{name}"
        yield from schema_values(sub, definitions, f"{path}{name}.")


def test_values_page_documents_every_value_the_schema_accepts() -> None:
    schema = json.loads((gen_reference.CHART_DIR / "values.schema.json").read_text())
    text = gen_reference.render_values()
    documented = set(re.findall(r"^\| `([\w.]+)` \|", text, re.M))
    leaves = set(schema_values(schema, schema.get("definitions", {})))
    parents = {path.rpartition(".")[0] for path in leaves}
    assert len(leaves) > 40
    assert leaves - parents - documented == set()
    assert documented - leaves == set()


def test_values_page_shows_the_defaults_of_values_yaml() -> None:
    defaults = yaml.safe_load((gen_reference.CHART_DIR / "values.yaml").read_text())
    text = gen_reference.render_values()
    assert "| `settings.workers` | integer | `32` |" in text
    assert f'| `image.repository` | string | `"{defaults["image"]["repository"]}"` |' in text


def test_check_mode_detects_a_stale_page(tmp_path: Any, monkeypatch: Any) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text("old\n")
    values = tmp_path / "values.md"
    values.write_text(gen_reference.render_values())
    monkeypatch.setattr(gen_reference, "REFERENCE_PATH", stale)
    monkeypatch.setattr(gen_reference, "VALUES_PATH", values)
    assert gen_reference.main(["--check"]) == 1
    assert gen_reference.main([]) == 0
    assert gen_reference.main(["--check"]) == 0
    assert stale.read_text() == gen_reference.render()
