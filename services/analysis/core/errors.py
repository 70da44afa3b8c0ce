"""Errors of the streaming core; they derive from ``rekindle.analysis.errors.AnalysisError``."""

from __future__ import annotations

from rekindle.analysis.errors import AnalysisError


class ConfigError(AnalysisError, ValueError):
    """``AnalysisConfig.<field>`` has an unusable value; ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"AnalysisConfig.{field}: {reason}")
        self.field = field
        self.reason = reason


class InputError(AnalysisError, ValueError):
    """An input given to the analyzer is malformed (shape mismatch, update after finish)."""
