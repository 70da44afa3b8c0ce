"""Pure streaming analysis core: no I/O, no clock, no broker.

The live service, ``rekindle analyze`` and replays all drive :class:`SessionAnalyzer` with the
same sequence of inputs and get the same events. ``docs/method.md`` documents the method.
"""

from services.analysis.core.analyzer import SessionAnalyzer
from services.analysis.core.config import AnalysisConfig
from services.analysis.core.errors import ConfigError, InputError
from services.analysis.core.types import (
    AnalyzerInput,
    EdaDecomposition,
    Episode,
    EpisodeStart,
    Event,
    FeatureRow,
    GapInput,
    MarkerInput,
    QualityChange,
    SampleBatch,
    Scr,
)

__all__ = [
    "AnalysisConfig",
    "AnalyzerInput",
    "ConfigError",
    "EdaDecomposition",
    "Episode",
    "EpisodeStart",
    "Event",
    "FeatureRow",
    "GapInput",
    "InputError",
    "MarkerInput",
    "QualityChange",
    "SampleBatch",
    "Scr",
    "SessionAnalyzer",
]
