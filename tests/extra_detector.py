"""A small real detector registered from outside the core, as docs/extending.md describes
(``tests/test_extending.py`` checks that its fields reach every output).

It reads a stream the core ignores, skin temperature (``temp``, °C), and averages it over a
trailing window; and it flags the seconds whose heart rate (from the core's feature row) is above
a threshold. One module, one registration line, one config section: ``skin_temp.window_s``,
``skin_temp.hr_threshold_bpm``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from rekindle.analysis.core import FeatureRow
from rekindle.analysis.core.extensions import DetectorSpec, FeatureField, register


@dataclass(frozen=True, slots=True)
class SkinTempConfig:
    """The ``skin_temp`` section."""

    #: Skin temperature is averaged over this trailing window (s).
    window_s: float = 10.0
    #: ``hr_above`` is 1 in the seconds whose heart rate exceeds this (bpm).
    hr_threshold_bpm: float = 80.0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s!r}")


class SkinTemp:
    """Trailing mean of the skin temperature; heart rate above a threshold."""

    def __init__(self, config: object) -> None:
        assert isinstance(config, SkinTempConfig)
        self.cfg = config
        self._samples: deque[tuple[float, float]] = deque()

    def feed(self, stream: str, device: str, times: list[float], values: list[float]) -> None:  # noqa: ARG002 (one stream, any device)
        self._samples.extend(zip(times, values, strict=True))

    def tick(self, k: int, row: FeatureRow) -> Mapping[str, float | None]:
        samples = self._samples
        while samples and samples[0][0] < k - self.cfg.window_s:
            samples.popleft()
        temp = math.fsum(v for _, v in samples) / len(samples) if samples else None
        above = None if row.hr is None else float(row.hr > self.cfg.hr_threshold_bpm)
        return {"skin_temp_c": temp, "hr_above": above}


SPEC = register(
    DetectorSpec(
        "skin_temp",
        (
            FeatureField("skin_temp_c", "°C", "skin temperature, mean over window_s"),
            FeatureField("hr_above", "", "1 when heart rate is above hr_threshold_bpm, else 0"),
        ),
        SkinTempConfig(),
        SkinTemp,
        streams=("temp",),
    )
)
