"""Errors raised by the ingest service. Every one derives from :class:`IngestError`."""

from __future__ import annotations

from pathlib import Path

from rekindle.errors import RekindleError


class IngestError(RekindleError):
    """Root of every ingest error."""


class PublishError(IngestError):
    """The MQTT broker at ``url`` could not take what we published."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"MQTT {url}: {reason}")
        self.url = url
        self.reason = reason


class SourceError(IngestError):
    """A recording that cannot be read; ``path`` and ``line`` (when known) locate the problem."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.reason = reason
        self.line = line
