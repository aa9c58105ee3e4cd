"""`mixpeek-operator crd`: print, write or check the generated BucketSync CRD."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write",
        action="store_true",
        help="write crds/ (and charts/mixpeek-operator/crds/ when that directory exists)",
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="exit 1 with a diff when the committed CRD files differ from the models",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="repository root for --write and --check (default: the current directory)",
    )


def run(args: argparse.Namespace) -> int:
    from mixpeek_operator import crd

    if args.write:
        targets = crd.crd_targets(args.root)
        crd.write_crds(targets)
        for target in targets:
            print(f"wrote {target}", file=sys.stderr)
        return 0
    if args.check:
        return _check(crd.crd_targets(args.root), crd.render_crd_yaml())
    sys.stdout.write(crd.render_crd_yaml())
    return 0


def _check(targets: list[Path], expected: str) -> int:
    stale = 0
    for target in targets:
        actual = target.read_text(encoding="utf-8") if target.exists() else ""
        if actual == expected:
            continue
        stale += 1
        sys.stdout.writelines(
            difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"{target} (committed)",
                tofile=f"{target} (generated)",
            )
        )
    if stale:
        print("CRD files are stale; run `mixpeek-operator crd --write`", file=sys.stderr)
        return 1
    return 0
