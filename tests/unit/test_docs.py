"""The documentation kept true: the site builds strictly, and what the pages say about the code
(metric names, flags and environment variables, repository paths, links) is checked against it."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from exporter import scrape_families

from mixpeek_operator import run_cli, settings
from mixpeek_operator.metrics import OperatorMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
# Every Markdown page a user reads: the README (also the wheel's long description), the
# changelog, the chart's README and the site's pages.
PAGES = sorted(
    [
        REPO_ROOT / "README.md",
        REPO_ROOT / "CHANGELOG.md",
        REPO_ROOT / "charts" / "mixpeek-operator" / "README.md",
        *DOCS.rglob("*.md"),
    ]
)
# A code span names a repository path when it starts with one of these.
TOP_LEVEL = {path.name for path in REPO_ROOT.iterdir() if not path.name.startswith(".")} | {
    ".github",
    ".ci",
    ".dockerignore",
} - {"build", "dist"}
FILE_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".json", ".lua", ".sh", ".toml", ".go", ".tpl"}
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    result = mkdocs_build(REPO_ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "values" / "index.html").is_file()


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        ("[gone](reference.md#no-such-field)", "no-such-field"),
        ("[gone](no-such-page.md)", "no-such-page.md"),
    ],
)
def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path, broken: str, complaint: str) -> None:
    shutil.copy(REPO_ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + f"\n{broken}\n")
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert complaint in result.stderr


def test_every_page_of_the_site_is_in_its_nav() -> None:
    nav = (REPO_ROOT / "mkdocs.yml").read_text()
    pages = [page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")]
    assert [page for page in pages if f": {page}\n" not in nav] == []


def named_paths(page: Path) -> Iterator[tuple[str, Path]]:
    """(as written, resolved) for every repository path the page names: relative link targets
    and code spans that start with a top-level entry of the repository."""
    text = page.read_text(encoding="utf-8")
    for target in LINK.findall(CODE_SPAN.sub("", text)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        yield target, (page.parent / target.partition("#")[0]).resolve()
    for span in CODE_SPAN.findall(text):
        candidate = span.strip().rstrip("/").rstrip(",").removeprefix("./")
        if any(char in candidate for char in " <>*{}$|=?@:[") or candidate.split("/")[0] not in TOP_LEVEL:
            continue
        if (
            "/" not in candidate
            and not Path(candidate).suffix
            and candidate not in {"Dockerfile", "Makefile"}
        ):
            continue
        yield span, REPO_ROOT / candidate
    # A file path outside the repository's top level (like a reference file that was never
    # added) is still a repository path when it names a source or doc file.
    for span in CODE_SPAN.findall(text):
        candidate = span.strip()
        if (
            "/" in candidate.lstrip("/")  # a URL path such as `/openapi.json` is no file
            and not candidate.startswith("/")
            and Path(candidate).suffix in FILE_SUFFIXES
            and candidate.split("/")[0] not in TOP_LEVEL
            and not any(char in candidate for char in " <>*{}$|=?@:[")
            and not (page.parent / candidate).exists()
        ):
            yield span, REPO_ROOT / candidate


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO_ROOT).as_posix())
def test_every_repository_path_a_page_names_exists(page: Path) -> None:
    missing = sorted({written for written, path in named_paths(page) if not path.exists()})
    assert missing == [], f"{page.relative_to(REPO_ROOT)} names paths that do not exist"


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and MkDocs' toc) gives a heading: lower case, punctuation dropped."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_readmes_links_and_anchors_resolve() -> None:
    """The README is read on GitHub and PyPI, outside the site: its links are checked here."""
    for page in (REPO_ROOT / "README.md", REPO_ROOT / "charts" / "mixpeek-operator" / "README.md"):
        for target in LINK.findall(CODE_SPAN.sub("", page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), target
            if anchor:
                assert anchor in anchors(resolved), target


def table_rows(page: Path, heading: str) -> list[list[str]]:
    """The cells of the first table after `heading` on `page`."""
    text = page.read_text(encoding="utf-8").partition(heading)[2].partition("\n")[2]
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            break
    assert len(rows) > 1, f"no table after {heading!r} in {page}"
    return rows[1:]  # below the alignment row


def served_families() -> dict[str, str]:
    """Metric name (counters with `_total`) -> type, as the operator's exporter serves them."""
    families = {
        family.name: family.type
        for family in scrape_families(OperatorMetrics())
        if family.name.startswith(("mixpeek_", "bucketsync_"))
    }
    return {
        name + ("_total" if kind == "counter" else ""): kind
        for name, kind in families.items()
        # prometheus_client's creation-time series of each counter and histogram
        if not (name.endswith("_created") and name.removesuffix("_created") in families)
    }


def test_the_metrics_table_lists_exactly_what_the_exporter_serves() -> None:
    documented: dict[str, str] = {}
    for row in table_rows(DOCS / "metrics.md", "| Metric |"):
        for name in re.findall(r"`([a-z_]+)`", row[0]):
            documented[name] = row[1]
    served = served_families()
    assert len(served) >= 10
    assert documented == served


def parser_options() -> dict[str, str | None]:
    """Each long option of `mixpeek-operator run` -> the environment variable it reads, if any."""
    parser = argparse.ArgumentParser()
    run_cli.configure_parser(parser)
    options: dict[str, str | None] = {}
    for action in parser._actions:
        if action.dest == "help":
            continue
        env = re.search(r"env (MIXPEEK_OPERATOR_[A-Z_]+)", action.help or "")
        for option in action.option_strings:
            if option.startswith("--"):
                options[option] = env.group(1) if env else None
    return options


def test_the_flags_table_matches_the_parser() -> None:
    documented: dict[str, str | None] = {}
    for flag_cell, env_cell, *_ in table_rows(DOCS / "operating.md", "| Flag |"):
        env = re.search(r"`(MIXPEEK_OPERATOR_[A-Z_]+)`", env_cell)
        for flag in re.findall(r"`(--[a-z-]+)", flag_cell):
            documented[flag] = env.group(1) if env else None
    assert documented == parser_options()


def settings_table() -> list[list[str]]:
    """docs/operating.md's settings table as the settings model generates it."""
    rows = []
    for setting in settings.settings():
        spec = setting.spec
        flags = [*spec.flags, f"--no-{spec.flags[-1][2:]}"] if setting.type is bool else spec.flags
        default = setting.shown_default
        if spec.shown_default is None and isinstance(setting.default, str):
            default = f"`{default}`"
        rows.append(
            [
                " / ".join(f"`{flag}`" for flag in flags),
                f"`{spec.env_var}`" if spec.env_var else "—",
                f"`{spec.chart}`" if spec.chart else "—",
                default,
                spec.help,
            ]
        )
    return rows


def test_the_settings_table_is_generated_from_the_model() -> None:
    """Flags, variables, chart values, defaults and help: one row per setting, in the model's
    order, so a setting added, renamed or given another default cannot leave the page behind."""
    expected = settings_table()
    assert len(expected) >= 20
    assert table_rows(DOCS / "operating.md", "| Flag |") == expected, (
        "docs/operating.md's settings table is stale; replace it with:\n"
        + "\n".join("| " + " | ".join(row) + " |" for row in expected)
    )


def test_the_troubleshooting_page_explains_every_condition_reason() -> None:
    from mixpeek_operator.constants import Reason

    reasons = {row[0].strip("`") for row in table_rows(DOCS / "troubleshooting.md", "| Reason |")}
    assert {reason.value for reason in Reason} - reasons == set()


def test_the_readme_gets_a_newcomer_going_on_its_first_screen() -> None:
    """What it is, the example, `make demo`, the Helm install and the links, in that order and
    within 300 lines; the reference lives in docs/."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    order = ["kind: BucketSync", "make demo", "helm install", "## Documentation"]
    positions = [readme.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert readme[: positions[1]].count("\n") < 60  # `make demo` on the first screen


def test_no_page_quotes_a_test_count() -> None:
    """Counts of passing tests go stale with every test added; pytest prints the real one."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert re.findall(r"\b\d[\d,]* (?:tests? )?pass(?:ed|es)?\b", text) == [], page


def test_the_example_secret_points_at_the_emulator_service_as_shipped() -> None:
    service = next(
        doc
        for doc in yaml.safe_load_all((DOCS / "quickstart" / "emulator.yaml").read_text())
        if doc and doc["kind"] == "Service"
    )
    url = f"http://{service['metadata']['name']}.mixpeek-system.svc:{service['spec']['ports'][0]['port']}"
    assert f"baseUrl: {url}" in (REPO_ROOT / "examples" / "credentials-secret.yaml").read_text()
    assert f"baseUrl={url}" in (REPO_ROOT / "README.md").read_text()


def test_the_gitops_page_counts_the_argocd_cm_keys_it_ships() -> None:
    keys = yaml.safe_load((DOCS / "argocd" / "argocd-cm.yaml").read_text())["data"]
    words = {2: "two", 3: "three", 4: "four"}
    assert f"the same {words[len(keys)]} keys" in (DOCS / "gitops.md").read_text()
