"""Inputs and events of the streaming analysis core (frozen value objects, no behaviour)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

#: ``rr_ppg``: RR intervals derived from PPG beside the core (``rekindle.analysis.ppg``), never
#: on the wire.
StreamName: TypeAlias = Literal["eda", "hr", "rr", "rr_ppg", "acc", "temp", "ppg", "ecg"]
QualityState: TypeAlias = Literal["good", "degraded", "lost"]
EpisodeKind: TypeAlias = Literal["arousal", "release"]


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Time-ordered samples of one stream from one device.

    ``times`` are unix seconds, one per sample; ``values`` has shape ``(n,)``, or ``(n, 3)`` for
    ``acc`` (g). Units follow the wire contract: EDA µS, HR bpm, RR ms.
    """

    stream: StreamName
    device: str
    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MarkerInput:
    """A clinician marker (stored and shown; the detector's references are local, so no marker
    changes the analysis)."""

    time: float
    text: str


@dataclass(frozen=True, slots=True)
class GapInput:
    """Data of ``stream`` from ``device`` is known to be missing between ``start`` and ``end``."""

    stream: str
    device: str
    start: float
    end: float


AnalyzerInput: TypeAlias = SampleBatch | MarkerInput | GapInput
#: The ``extra`` of every feature row while no detector is registered (shared; never mutated).
NO_EXTRA: Mapping[str, float | None] = {}


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """Features for one whole second of session time (1 Hz); ``time`` is an integer unix second.

    The row summarises the data with sample times ``< time``. ``contributions`` gives the index
    points each input contributed (they sum to ``arousal_index``); ``quality`` maps each stream
    seen so far to ``good``, ``degraded`` or ``lost``. ``extra`` holds the values of the
    registered detectors' fields (:mod:`rekindle.analysis.core.extensions`; empty without any).
    """

    time: float
    hr: float | None
    rmssd: float | None
    eda_tonic: float | None
    eda_phasic: float | None
    scr_rate: float | None
    arousal_index: float | None
    contributions: Mapping[str, float]
    quality: Mapping[str, str]
    extra: Mapping[str, float | None]

    def __init__(
        self,
        time: float,
        hr: float | None,
        rmssd: float | None,
        eda_tonic: float | None,
        eda_phasic: float | None,
        scr_rate: float | None,
        arousal_index: float | None,
        contributions: Mapping[str, float],
        quality: Mapping[str, str],
        extra: Mapping[str, float | None] = NO_EXTRA,
    ) -> None:
        # Written out (the dataclass keeps it): one row is built every second, and the generated
        # ``__init__`` of a frozen dataclass looks ``object.__setattr__`` up once per field.
        set_ = object.__setattr__
        set_(self, "time", time)
        set_(self, "hr", hr)
        set_(self, "rmssd", rmssd)
        set_(self, "eda_tonic", eda_tonic)
        set_(self, "eda_phasic", eda_phasic)
        set_(self, "scr_rate", scr_rate)
        set_(self, "arousal_index", arousal_index)
        set_(self, "contributions", contributions)
        set_(self, "quality", quality)
        set_(self, "extra", extra)


@dataclass(frozen=True, slots=True)
class EdaDecomposition:
    """Tonic and phasic EDA (µS) at the EDA sample times, emitted once final."""

    device: str
    times: npt.NDArray[np.float64]
    tonic: npt.NDArray[np.float64]
    phasic: npt.NDArray[np.float64]

    def __init__(
        self,
        device: str,
        times: npt.NDArray[np.float64],
        tonic: npt.NDArray[np.float64],
        phasic: npt.NDArray[np.float64],
    ) -> None:
        # Written out, as :class:`FeatureRow`'s (built every second).
        set_ = object.__setattr__
        set_(self, "device", device)
        set_(self, "times", times)
        set_(self, "tonic", tonic)
        set_(self, "phasic", phasic)


@dataclass(frozen=True, slots=True)
class Scr:
    """One skin-conductance response: onset and peak (unix s), trough-to-peak amplitude (µS)."""

    device: str
    onset: float
    peak: float
    amplitude: float


@dataclass(frozen=True, slots=True)
class Episode:
    """An arousal episode, or an emotional-release episode (surge followed by recovery).

    For ``arousal``: ``onset``/``offset`` delimit the time the index stayed at or above the enter
    threshold (with hysteresis), ``peak`` is when it peaked and ``peak_index`` its value.

    For ``release``: ``onset``, ``peak`` and ``peak_index`` are those of the surge (the arousal
    episode); ``offset`` is when recovery was confirmed. ``recovery_depth`` is the heart rate's
    fall below its mean during the surge as a fraction of the surge's rise above its pre-surge
    trough (1.0 = back where it started; above 1 = below it: docs/method.md). ``recovery_latency``
    is seconds from the surge peak until the recovery criterion was first met.

    ``confirmed`` is the feature second at which the episode was declared (the alert time): for an
    arousal episode when its minimum duration was reached (``onset`` is retrospective, earlier),
    for a release when its recovery was confirmed.
    """

    kind: EpisodeKind
    onset: float
    peak: float
    offset: float
    peak_index: float
    signals: tuple[str, ...]
    recovery_depth: float | None = None
    recovery_latency: float | None = None
    confirmed: float | None = None


@dataclass(frozen=True, slots=True)
class EpisodeStart:
    """An arousal episode was confirmed and is still open (live alerting).

    ``onset`` is the onset the closing :class:`Episode` will carry; ``confirmed`` is the feature
    second at which the minimum duration was reached; ``peak_index`` is the highest index so far.
    """

    kind: EpisodeKind
    onset: float
    confirmed: float
    peak_index: float


@dataclass(frozen=True, slots=True)
class QualityChange:
    """The quality of ``stream`` changed to ``state`` at ``time`` (unix s, a feature-row time)."""

    time: float
    stream: str
    state: QualityState


Event: TypeAlias = FeatureRow | EdaDecomposition | Scr | Episode | EpisodeStart | QualityChange
