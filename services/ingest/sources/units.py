"""Units that readers accept for each stream, converted to the contract's units."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

from rekindle.contract import SampleStream

#: stream -> accepted unit (lower case) -> (scale, offset): contract = value * scale + offset
UNITS: Final[Mapping[SampleStream, Mapping[str, tuple[float, float]]]] = {
    "eda": {"us": (1.0, 0.0), "µs": (1.0, 0.0), "microsiemens": (1.0, 0.0), "ns": (1e-3, 0.0)},
    "hr": {"bpm": (1.0, 0.0), "1/min": (1.0, 0.0)},
    "rr": {"ms": (1.0, 0.0), "s": (1000.0, 0.0)},
    "ppg": {"au": (1.0, 0.0), "arbitrary": (1.0, 0.0), "a.u.": (1.0, 0.0)},
    "temp": {"c": (1.0, 0.0), "degc": (1.0, 0.0), "°c": (1.0, 0.0), "k": (1.0, -273.15)},
    "ecg": {"mv": (1.0, 0.0), "uv": (1e-3, 0.0), "µv": (1e-3, 0.0), "v": (1e3, 0.0)},
    "acc": {
        "g": (1.0, 0.0),
        "m/s2": (1.0 / 9.80665, 0.0),
        "m/s^2": (1.0 / 9.80665, 0.0),
        "mps2": (1.0 / 9.80665, 0.0),
    },
}
#: Streams whose unit may go unstated (arbitrary units).
UNITLESS: Final = frozenset({"ppg"})


def accepted(stream: SampleStream) -> str:
    return ", ".join(UNITS[stream])


def convert(
    stream: SampleStream, unit: str, values: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64] | None:
    """``values`` in the contract's unit, or None when ``unit`` is not one of ``stream``'s."""
    factor = UNITS[stream].get(unit.strip().lower())
    if factor is None:
        return None
    scale, offset = factor
    if scale == 1.0 and offset == 0.0:
        return values
    return values * scale + offset
