"""``read(path) -> Recording``: any supported recording as pandas DataFrames.

A :class:`Recording` holds one DataFrame per stream (``time`` in unix seconds, then ``value``,
or ``x``, ``y``, ``z`` for acc; values in the contract's units, see ``units``), the markers
(``time``, ``text``, ``device``) and metadata (source, name, format, devices, units, sample
rates of the regular streams).
Every sample the file holds is there, including those outside the contract's physical range,
which the analysis drops.

``Recording.chunks()`` gives back exactly the chunks that ``rekindle analyze`` reads from the
file (tested for every format), so a recording read here and analysed is the command line's
analysis. For regular streams the DataFrame's ``attrs`` keep ``t0`` and ``fs``; a Rekindle
recording's own message boundaries are not kept (its chunks are rebuilt per second).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rekindle import contract
from rekindle.contract import SampleStream
from rekindle.ingest.sources import display_name
from rekindle.ingest.sources.base import (
    Chunk,
    ReadOptions,
    irregular_chunks,
    marker_chunks,
    merge_in_time,
    regular_chunks,
    regular_rate,
    series_chunks,
)
from rekindle.ingest.sources.tables import F64Array, SeriesSet

MARKER_COLUMNS = ("time", "text", "device")


def _frame(stream: SampleStream, times: F64Array, values: F64Array, **attrs: Any) -> pd.DataFrame:
    if stream == "acc":
        values = values.reshape(-1, 3)
        frame = pd.DataFrame(
            {"time": times, "x": values[:, 0], "y": values[:, 1], "z": values[:, 2]}
        )
    else:
        frame = pd.DataFrame({"time": times, "value": values})
    frame.attrs.update(stream=stream, unit=contract.UNITS[stream], **attrs)
    return frame


def _values(frame: pd.DataFrame) -> F64Array:
    if "value" in frame.columns:
        return frame["value"].to_numpy(np.float64)
    return frame[["x", "y", "z"]].to_numpy(np.float64)


@dataclass(slots=True)
class Recording:
    """A recording as DataFrames: ``streams`` by stream name (``eda``, ``hr``, ...; ``eda@dev``
    when several devices send one stream), ``markers`` and ``metadata``."""

    streams: dict[str, pd.DataFrame] = field(default_factory=dict)
    markers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MARKER_COLUMNS))
    metadata: dict[str, Any] = field(default_factory=dict)

    def chunks(self) -> Iterator[Chunk]:
        """The recording's chunks, time-ordered, as ``rekindle analyze`` reads them."""
        parts: list[Iterator[Chunk]] = []
        for frame in self.streams.values():
            stream: SampleStream = frame.attrs["stream"]
            device = str(frame.attrs["device"])
            values = _values(frame)
            if "fs" in frame.attrs:
                parts.append(
                    regular_chunks(stream, device, frame.attrs["t0"], frame.attrs["fs"], values)
                )
            elif stream == "rr" and frame.attrs.get("grouping") == "e4":
                times = frame["time"].to_numpy(np.float64).tolist()
                parts.append(irregular_chunks("rr", device, times, values.tolist()))
            else:
                parts.append(
                    series_chunks(stream, device, frame["time"].to_numpy(np.float64), values)
                )
        for name, group in self.markers.groupby("device", sort=False):
            parts.append(marker_chunks(str(name), group["time"].tolist(), group["text"].tolist()))
        return merge_in_time(parts)


def _markers(times: list[float], texts: list[str], device: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": np.asarray(times, dtype=np.float64),
            "text": texts,
            "device": [device] * len(texts),
        }
    )


def _from_e4(path: Path) -> Recording:
    from rekindle.ingest.sources import e4  # noqa: PLC0415

    export = e4.load_e4(path)
    rec = Recording()
    for s in export.regular:
        times = s.t0 + np.arange(len(s.values)) / s.fs
        rec.streams[s.stream] = _frame(
            s.stream, times, s.values, device=e4.DEVICE, t0=s.t0, fs=s.fs
        )
    if len(export.beat_times):
        rec.streams["rr"] = _frame(
            "rr", export.beat_times, export.rr_ms, device=e4.DEVICE, grouping="e4"
        )
    tags = export.tags.tolist()
    rec.markers = _markers(tags, [e4.TAG_TEXT] * len(tags), e4.DEVICE)
    return rec


def _from_series(series: SeriesSet) -> Recording:
    rec = Recording()
    for s in series.series:
        rec.streams[s.stream] = _frame(s.stream, s.times, s.values, device=s.device)
    rec.markers = _markers(series.marker_times, series.marker_texts, series.marker_device)
    return rec


def _from_chunks(chunks: Iterator[Chunk]) -> Recording:
    samples: dict[tuple[str, str], tuple[list[float], list[Any]]] = {}
    marks: list[tuple[float, str, str]] = []
    for c in chunks:
        if c.stream == "marker":
            marks.extend((t, str(v), c.device) for t, v in zip(c.t or (), c.values, strict=True))
            continue
        times, values = samples.setdefault((c.stream, c.device), ([], []))
        if c.t is not None:
            times.extend(c.t)
        else:
            assert c.t0 is not None
            assert c.fs is not None
            times.extend((c.t0 + np.arange(len(c.values)) / c.fs).tolist())
        values.extend(c.values)
    rec = Recording()
    per_stream: dict[str, int] = {}
    for stream, _device in samples:
        per_stream[stream] = per_stream.get(stream, 0) + 1
    for (stream, device), (times, values) in samples.items():
        key = stream if per_stream[stream] == 1 else f"{stream}@{device}"
        t = np.asarray(times, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        v = np.asarray(values, dtype=np.float64)[order]
        rec.streams[key] = _frame(stream, t[order], v, device=device)  # type: ignore[arg-type]
    marks.sort(key=lambda m: m[0])
    rec.markers = pd.DataFrame(marks, columns=list(MARKER_COLUMNS))
    if rec.markers.empty:
        rec.markers = pd.DataFrame(columns=MARKER_COLUMNS)
    return rec


def read(path: str | Path, options: ReadOptions | None = None) -> Recording:
    """Any supported recording (``rekindle read --list-formats``) as a :class:`Recording`."""
    from rekindle.ingest.sources import csvfile, emotibit, xdf  # noqa: PLC0415
    from rekindle.ingest.sources.formats import detect  # noqa: PLC0415

    path = Path(path)
    fmt = detect(path)
    if fmt.name in {"E4", "zip"}:
        rec = _from_e4(path)
    elif fmt.name == "CSV":
        rec = _from_series(csvfile.load_csv(path, options))
    elif fmt.name == "EmotiBit":
        rec = _from_series(emotibit.load_emotibit(path))
    elif fmt.name == "XDF":
        rec = _from_series(xdf.load_xdf(path, options))
    else:
        rec = _from_chunks(fmt.open(path, options or ReadOptions(), 1.0))
    rec.metadata.update(
        source=str(path),
        name=display_name(path),
        format=fmt.name,
        devices={k: f.attrs["device"] for k, f in rec.streams.items()},
        units={k: f.attrs["unit"] for k, f in rec.streams.items()},
        rates=rates(rec),
    )
    return rec


def rates(rec: Recording) -> dict[str, float]:
    """Sample rate (Hz) per regular stream: the file's stated rate (E4), else the rate of
    regular sample times (within a quarter sample, as the analysis sends them regular). RR and
    other irregular streams have none."""
    out: dict[str, float] = {}
    for key, frame in rec.streams.items():
        if "fs" in frame.attrs:
            out[key] = float(frame.attrs["fs"])
        elif frame.attrs["stream"] not in contract.IRREGULAR_ONLY:
            fs = regular_rate(frame["time"].to_numpy(np.float64))
            if fs is not None:
                out[key] = fs
    return out
