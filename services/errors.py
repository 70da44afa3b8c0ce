"""The root of Rekindle's errors.

Every error that Rekindle raises on purpose derives from :class:`RekindleError`, so a caller can
catch all of them with one ``except rekindle.RekindleError``. Errors that also mean "a bad value"
(a malformed message, a bad parameter) derive from :class:`ValueError` too.
"""

from __future__ import annotations


class RekindleError(Exception):
    """Base class of every error raised by Rekindle (ingest, analysis, dashboards, the CLI)."""
