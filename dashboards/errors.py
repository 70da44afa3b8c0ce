"""Errors of the ``dashboards`` package."""

from __future__ import annotations

from pathlib import Path

from rekindle.errors import RekindleError


class DashboardsError(RekindleError):
    """Root of every error raised by the ``dashboards`` package."""


class DriftError(DashboardsError):
    """Committed generated files differ from what the code generates now.

    ``paths`` lists the files (relative to the repository root) that are missing or different.
    """

    def __init__(self, paths: list[Path]) -> None:
        names = ", ".join(str(p) for p in paths)
        super().__init__(f"generated files out of date: {names} (run `rekindle dashboards build`)")
        self.paths = paths
