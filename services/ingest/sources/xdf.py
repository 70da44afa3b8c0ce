"""XDF files (Lab Streaming Layer recordings, e.g. from LabRecorder), read with ``pyxdf``.

Each XDF stream is matched by its ``type`` (else its ``name``), case-insensitively: ``EDA``/
``GSR`` -> eda, ``HR`` -> hr, ``RR``/``IBI`` -> rr, ``PPG``/``BVP`` -> ppg, ``ECG`` -> ecg,
``TEMP`` -> temp, ``ACC`` (3 channels) -> acc, ``Markers`` or any string stream -> markers.
Channel units from the stream's ``desc/channels/channel/unit`` are converted (see
:mod:`rekindle.ingest.sources.units`); a channel without a unit is taken in the contract's unit.
Other streams (EEG, ...) are skipped.

Times: pyxdf's synchronised LSL times. LSL clocks count from an arbitrary origin, so unless
they are already unix times, they are placed with ``--start UNIX`` (the unix time of the
earliest sample) or else the file header's ``datetime`` (when recording started, to the second).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from rekindle import contract
from rekindle.contract import SampleStream
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources import units
from rekindle.ingest.sources.base import Chunk, ReadOptions
from rekindle.ingest.sources.tables import SeriesSet, TimedSeries

DEVICE = "xdf"
KINDS: Final[dict[str, SampleStream]] = {
    "eda": "eda",
    "gsr": "eda",
    "hr": "hr",
    "heartrate": "hr",
    "rr": "rr",
    "ibi": "rr",
    "ppg": "ppg",
    "bvp": "ppg",
    "ecg": "ecg",
    "temp": "temp",
    "temperature": "temp",
    "acc": "acc",
    "accelerometer": "acc",
}
NEEDS = "a .xdf file (Lab Streaming Layer) with EDA, HR, RR, PPG, ECG, TEMP or ACC streams"


def _first(info: Mapping[str, Any], key: str) -> str:
    value = info.get(key)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return ""


def _units(info: Mapping[str, Any]) -> list[str | None]:
    try:
        channels = info["desc"][0]["channels"][0]["channel"]
        return [(_first(ch, "unit") or None) for ch in channels]
    except (KeyError, IndexError, TypeError):
        return []


def _kind(info: Mapping[str, Any]) -> SampleStream | None:
    for key in ("type", "name"):
        kind = KINDS.get(_first(info, key).strip().lower().replace(" ", ""))
        if kind is not None:
            return kind
    return None


def _header_start(header: Mapping[str, Any] | None) -> float | None:
    try:
        info = header["info"]  # type: ignore[index]
        info = info[0] if isinstance(info, list) else info
        return datetime.fromisoformat(str(info["datetime"][0]).strip()).timestamp()
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def load_xdf(path: Path, options: ReadOptions | None = None) -> SeriesSet:
    import pyxdf  # noqa: PLC0415 (only XDF users pay for it)

    options = options or ReadOptions()
    try:
        streams, header = pyxdf.load_xdf(str(path))
    except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:
        raise SourceError(path, f"cannot read as XDF: {exc}") from exc
    used: list[tuple[SampleStream | None, dict[str, Any]]] = []
    firsts = []
    for stream in streams:
        info = stream["info"]
        stamps = np.asarray(stream["time_stamps"], dtype=np.float64)
        is_marker = _first(info, "channel_format") == "string"
        kind = None if is_marker else _kind(info)
        if (kind is None and not is_marker) or not len(stamps):
            continue
        used.append((kind, stream))
        firsts.append(float(stamps[0]))
    if not used:
        names = ", ".join(
            f"{_first(s['info'], 'name')} ({_first(s['info'], 'type')})" for s in streams
        )
        raise SourceError(path, f"no stream Rekindle reads ({NEEDS}); found {names or 'none'}")
    earliest = min(firsts)
    if options.start is not None:
        offset = options.start - earliest
    elif earliest >= contract.MIN_TIME_S:
        offset = 0.0
    else:
        start = _header_start(header)
        if start is None:
            raise SourceError(
                path,
                "LSL times are not unix times and the file header has no datetime; give the "
                "unix time of the first sample with --start",
            )
        offset = start - earliest
    out = SeriesSet(marker_device=DEVICE)
    for kind, stream in used:
        info = stream["info"]
        times = np.asarray(stream["time_stamps"], dtype=np.float64) + offset
        order = np.argsort(times, kind="stable")
        times = times[order]
        name = _first(info, "name") or "?"
        if kind is None:
            rows = [stream["time_series"][i] for i in order.tolist()]
            out.marker_times.extend(times.tolist())
            out.marker_texts.extend(str(r[0]) if len(r) else "" for r in rows)
            continue
        data = np.asarray(stream["time_series"], dtype=np.float64)[order]
        width = 3 if kind == "acc" else 1
        if data.ndim != 2 or data.shape[1] < width:
            raise SourceError(path, f"stream {name!r}: {kind} needs {width} channel(s)")
        channel_units = _units(info) or [None] * data.shape[1]
        columns = []
        for c in range(width):
            unit = channel_units[c] if c < len(channel_units) else None
            values = data[:, c]
            if unit is not None:
                converted = units.convert(kind, unit, values)
                if converted is None:
                    raise SourceError(
                        path,
                        f"stream {name!r} channel {c + 1}: unit {unit!r} is not one of "
                        f"{units.accepted(kind)}",
                    )
                values = converted
            columns.append(values)
        values = np.column_stack(columns) if width == 3 else columns[0]
        if any(s.stream == kind for s in out.series):
            raise SourceError(path, f"stream {name!r}: a second {kind} stream; keep one")
        keep = np.concatenate([[True], np.diff(times) > 0])
        out.series.append(TimedSeries(kind, DEVICE, times[keep], values[keep]))
    return out


def read_xdf(path: Path, options: ReadOptions | None = None) -> Iterator[Chunk]:
    return load_xdf(path, options).chunks()
