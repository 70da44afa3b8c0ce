"""Pure streaming analysis core: no I/O, no clock, no broker.

The live service, ``rekindle analyze`` and replays all drive :class:`SessionAnalyzer` with the
same sequence of inputs and get the same events. ``docs/method.md`` documents the method.
"""

import copyreg
from collections.abc import Callable
from dataclasses import fields

from rekindle.analysis.core.analyzer import (
    SessionAnalyzer,
    _AccProcessor,
    _ExtensionFeed,
    _Pending,
)
from rekindle.analysis.core.arousal import (
    ArousalDetector,
    _Extreme,
    _Input,
    _Mean,
    _Quantile,
    _Surge,
)
from rekindle.analysis.core.cardiac import HrProcessor, RrProcessor
from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.eda import EdaProcessor
from rekindle.analysis.core.errors import ConfigError, InputError
from rekindle.analysis.core.types import (
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


# --- pickling (the analysis service's checkpoints) ---------------------------------------------
# The core runs as plain Python or compiled with mypyc (docs/deploy.md, "Compiled core"). A class
# compiled by mypyc runs ``__init__`` from ``__new__`` and has no ``__dict__``, and its frozen
# dataclasses refuse ``__setattr__``, so Python's default pickling fails on it. Every class that
# a checkpoint holds is therefore pickled as "call the class with its constructor arguments, then
# restore the state" (``__getstate__``/``__setstate__``, which both the interpreter and mypyc
# provide): the same checkpoint loads in either build.


def _reduce_frozen(obj: object) -> tuple[type, tuple[object, ...]]:
    """A frozen dataclass: rebuilt by calling the class with its field values."""
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj))  # type: ignore[arg-type]


#: Stateful classes and the attributes that hold their constructor arguments.
_INIT_ARGS: dict[type, tuple[str, ...]] = {
    SessionAnalyzer: ("cfg",),
    _Pending: ("key",),
    _AccProcessor: ("cfg", "device"),
    _ExtensionFeed: ("stream", "device", "inner", "targets"),
    EdaProcessor: ("cfg", "device"),
    HrProcessor: ("cfg", "device"),
    RrProcessor: ("cfg", "device"),
    ArousalDetector: ("cfg",),
    _Input: ("avg_s", "window_s", "sign", "q", "gap_s"),
    _Mean: ("window",),
    _Extreme: ("window", "sign"),
    _Quantile: ("window", "gap", "q", "sign"),
    _Surge: ("onset", "peak", "peak_index", "hr_start"),
}


def _state(obj: object) -> dict[str, object]:
    """All attributes of ``obj`` as one dict (``__getstate__`` gives a dict, or a
    ``(dict, slots)`` pair for slotted classes, depending on the build)."""
    raw = obj.__getstate__()
    parts = raw if isinstance(raw, tuple) else (raw,)
    state: dict[str, object] = {}
    for part in parts:
        if part:
            state.update(part)
    return state


def _restore(cls: type, args: tuple[object, ...], state: dict[str, object]) -> object:
    obj = cls(*args)
    for name, value in state.items():
        setattr(obj, name, value)
    return obj


def _reduce_stateful(
    obj: object,
) -> tuple[Callable[..., object], tuple[type, tuple[object, ...], dict[str, object]]]:
    args = tuple(getattr(obj, name) for name in _INIT_ARGS[type(obj)])
    return _restore, (type(obj), args, _state(obj))


for _cls in (
    AnalysisConfig,
    SampleBatch,
    MarkerInput,
    GapInput,
    FeatureRow,
    EdaDecomposition,
    Scr,
    Episode,
    EpisodeStart,
    QualityChange,
):
    copyreg.pickle(_cls, _reduce_frozen)
for _stateful in _INIT_ARGS:
    copyreg.pickle(_stateful, _reduce_stateful)


def is_compiled() -> bool:
    """True when this core was compiled with mypyc (the analysis image), False for plain Python."""
    import rekindle.analysis.core.analyzer as module  # noqa: PLC0415

    return not str(module.__file__).endswith(".py")
