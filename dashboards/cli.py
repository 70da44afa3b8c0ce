"""``rekindle dashboards build [--check]``: regenerate the Grafana dashboards and alert rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from rekindle.dashboards import generate
from rekindle.dashboards.errors import DriftError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dashboards", help="Grafana dashboards and alert rules generated from code"
    )
    sub = parser.add_subparsers(dest="dashboards_command", required=True)
    build = sub.add_parser(
        "build",
        help="write dashboards/generated/*.json and the alert-rule provisioning file",
        description="Regenerate the dashboard JSON and alert rules from the Python code.",
    )
    build.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a committed file differs from the generated one",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=generate.PACKAGE_DIR,
        help="directory holding generated/ and provisioning/ (default: the dashboards package)",
    )
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    root: Path = args.out
    if args.check:
        try:
            generate.check(root)
        except DriftError as exc:
            print(exc)
            return 1
        print(f"generated files in {root} are up to date")
        return 0
    changed = generate.write_all(root)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"generated files in {root} were already up to date")
    return 0
