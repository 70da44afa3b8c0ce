"""Errors raised by the analysis service. Every one derives from :class:`AnalysisError`."""

from __future__ import annotations

from rekindle.errors import RekindleError


class AnalysisError(RekindleError):
    """Root of every analysis-service error."""


class StorageError(AnalysisError):
    """InfluxDB at ``url`` refused or could not take a write; ``status`` is the HTTP status."""

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"InfluxDB {url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class BrokerError(AnalysisError):
    """The MQTT broker at ``url`` could not be used."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"MQTT {url}: {reason}")
        self.url = url
        self.reason = reason


class OutputError(AnalysisError):
    """An output file (``what``) of ``rekindle analyze`` could not be written."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason
