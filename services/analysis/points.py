"""Pure conversion of wire messages and analysis events to InfluxDB line protocol.

Timestamps are integer nanoseconds derived only from the data, so writing the same recording
twice overwrites the same points instead of duplicating them. The analysis events' fields come
from the one output schema (:mod:`rekindle.analysis.schema`); the storage layout is documented in
``docs/storage.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import cast

import numpy as np
import numpy.typing as npt

from rekindle import contract
from rekindle.analysis import schema
from rekindle.analysis.core import (
    EdaDecomposition,
    Episode,
    EpisodeStart,
    Event,
    FeatureRow,
    QualityChange,
    Scr,
)

QUALITY_CODES: Mapping[str, int] = schema.QUALITY_CODES
FieldValue = float | int | str | bool


def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue | None], ns: int
) -> str | None:
    """One line of line protocol; None when no field has a (finite) value."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                continue
            parts.append(f"{_key(key)}={value!r}")
        else:
            parts.append(f"{_key(key)}={_field(value)}")
    if not parts:
        return None
    return f"{_series(measurement, tuple(sorted(tags.items())))} {','.join(parts)} {ns}"


@functools.lru_cache(maxsize=1024)
def _key(text: str) -> str:
    """:func:`_escape_key` of a field key, remembered (the schema's keys are a small set)."""
    return _escape_key(text)


@functools.lru_cache(maxsize=4096)
def _series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """The measurement and its tag set (``tags`` sorted by key; empty values left out),
    escaped: the same for every line of a series, so computed once per series."""
    tag_text = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in tags if v)
    return f"{_escape_key(measurement)}{tag_text}"


def _line_value(value: object) -> FieldValue | None:
    """A schema value as a line-protocol field: a tuple of text items joined by commas."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    assert value is None or isinstance(value, float | int | str | bool)
    return value


def to_ns(seconds: float) -> int:
    return round(seconds * 1e9)


def sample_times_ns(msg: contract.SampleMessage) -> npt.NDArray[np.int64]:
    """:meth:`contract.SampleMessage.times_ns` as an array, computed in numpy with the same
    operations (``round`` and ``rint`` both round half to even), so equal to the last bit.
    A regular message's offsets depend only on its length and rate, so they are cached."""
    if msg.t is not None:
        if len(msg.t) < 16:  # (numpy's call overhead is larger than the list's here)
            return np.asarray(msg.times_ns(), dtype=np.int64)
        return np.rint(np.asarray(msg.t, dtype=np.float64) * 1e9).astype(np.int64)
    assert msg.t0 is not None
    assert msg.fs is not None
    return round(msg.t0 * 1e9) + _offsets_ns(len(msg.values), msg.fs)


@functools.lru_cache(maxsize=256)
def _offsets_ns(n: int, fs: float) -> npt.NDArray[np.int64]:
    offsets = np.rint(np.arange(n, dtype=np.float64) * (1e9 / fs)).astype(np.int64)
    offsets.setflags(write=False)
    return offsets


@functools.lru_cache(maxsize=4096)
def _signal_prefix(site: str, session: str, device: str, stream: str) -> str:
    """``signal`` and its tag set, escaped and sorted as :func:`line` writes them, plus the
    space before the fields: the same for every sample of a stream, so computed once."""
    tags = {"site": site, "session": session, "device": device, "stream": stream}
    tag_text = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v)
    return f"signal{tag_text} "


def _sample_lines(
    msg: contract.SampleMessage, times_ns: npt.NDArray[np.int64] | None = None
) -> list[str] | None:
    """:func:`line` for every sample of ``msg``, byte for byte, without building a field dict
    per sample: the tag set once per stream (:func:`_signal_prefix`), ``repr`` of each float.
    None when a value is not a finite Python float (that rare message takes the general path,
    which skips non-finite fields and formats other types)."""
    values = msg.values
    if msg.stream == "acc":
        flat = list(chain.from_iterable(cast(Sequence[tuple[float, float, float]], values)))
    else:
        flat = cast(list[float], values)
    if set(map(type, flat)) - {float} or not all(map(math.isfinite, flat)):
        return None
    prefix = _signal_prefix(msg.site, msg.session, msg.device, msg.stream)
    times = (sample_times_ns(msg) if times_ns is None else times_ns).tolist()
    if msg.stream != "acc":
        return [f"{prefix}value={v!r} {ns}" for v, ns in zip(flat, times, strict=True)]
    out = []
    for (x, y, z), ns in zip(
        cast(Sequence[tuple[float, float, float]], values), times, strict=True
    ):
        mag = math.sqrt(x * x + y * y + z * z)
        if not math.isfinite(mag):  # (squares of huge components overflow)
            return None
        out.append(f"{prefix}value={mag!r},x={x!r},y={y!r},z={z!r} {ns}")
    return out


def message_lines(
    msg: contract.Message, times_ns: npt.NDArray[np.int64] | None = None
) -> list[str]:
    """Raw-data lines for a validated wire message (every sample exactly once). ``times_ns``:
    the message's :func:`sample_times_ns` when the caller has them already."""
    if isinstance(msg, contract.SampleMessage):
        fast = _sample_lines(msg, times_ns)
        if fast is not None:
            return fast
    base = {"site": msg.site, "session": msg.session, "device": msg.device}
    out: list[str | None] = []
    fields: dict[str, FieldValue | None]
    if isinstance(msg, contract.SampleMessage):
        tags = {**base, "stream": msg.stream}
        values: Sequence[float | tuple[float, float, float]] = msg.values
        for ns, value in zip(msg.times_ns(), values, strict=True):
            if isinstance(value, tuple):
                x, y, z = value
                fields = {
                    "value": math.sqrt(x * x + y * y + z * z),
                    "x": x,
                    "y": y,
                    "z": z,
                }
            else:
                fields = {"value": value}
            out.append(line("signal", tags, fields, ns))
    elif isinstance(msg, contract.MarkerMessage):
        for t, text in zip(msg.t, msg.values, strict=True):
            out.append(line("marker", base, {"text": text}, to_ns(t)))
    elif isinstance(msg, contract.StatusMessage):
        fields = {
            "state": msg.state,
            "battery": msg.battery,
            "rssi": msg.rssi,
            "detail": msg.detail,
        }
        out.append(line("status", base, fields, to_ns(msg.t)))
    else:
        out.append(
            line(
                "gap",
                {**base, "stream": msg.gap_stream},
                schema.gap_record(msg.start, msg.end),
                to_ns(msg.start),
            )
        )
    return [x for x in out if x is not None]


#: ``features.ended_code`` of a session's end mark: a number outside the arousal index's 0-100
#: and the quality codes 0-2, which the dashboards' "now" panels map to "ended" (a boolean
#: cannot share a column with their numbers, and InfluxQL cannot turn one into a number).
ENDED_CODE = -1


def session_end_line(site: str, session: str, t: float) -> str:
    """``features`` field ``ended`` = true (and ``ended_code`` = :data:`ENDED_CODE`) at ``t``:
    every device of the session sent ``status: end``, so its silence from then on is a normal
    end, not a lost wearable.

    It lives on the ``features`` series (not in a measurement of its own) so that one InfluxQL
    query (the no-data alert rule, dashboards/alerts.py) sees both the feature rows and the end.
    """
    fields: dict[str, FieldValue | None] = {"ended": True, "ended_code": ENDED_CODE}
    out = line("features", {"site": site, "session": session}, fields, to_ns(t))
    assert out is not None  # a constant field
    return out


def event_lines(site: str, session: str, events: Iterable[Event]) -> list[str]:
    """Lines for analysis events (features, EDA decomposition, SCRs, episodes, quality)."""
    base = {"site": site, "session": session}
    out: list[str | None] = []
    for ev in events:
        if isinstance(ev, FeatureRow):
            ns = to_ns(ev.time)
            fields: dict[str, FieldValue | None] = dict(schema.feature_values(ev))
            # always written: the no-data alert counts rows (the index is absent while the EDA
            # that leads it is lost or the detector warms up)
            fields["streams"] = sum(1 for q in ev.quality.values() if q != "lost")
            fields.update(schema.contrib_fields(ev))
            out.append(line("features", base, fields, ns))
            for stream, state in sorted(ev.quality.items()):
                out.append(
                    line(
                        "quality",
                        {**base, "stream": stream},
                        {"state": state, "code": QUALITY_CODES.get(state, 0)},
                        ns,
                    )
                )
        elif isinstance(ev, EdaDecomposition):
            tags = {**base, "device": ev.device}
            for t, tonic, phasic in zip(ev.times, ev.tonic, ev.phasic, strict=True):
                out.append(
                    line("eda", tags, {"tonic": float(tonic), "phasic": float(phasic)}, to_ns(t))
                )
        elif isinstance(ev, Scr):
            out.append(
                line(
                    "scr",
                    {**base, "device": ev.device},
                    {"amplitude": ev.amplitude, "onset": ev.onset},
                    to_ns(ev.peak),
                )
            )
        elif isinstance(ev, Episode | EpisodeStart):
            # An open episode (EpisodeStart) has the same series and time as the closing Episode,
            # which later overwrites its fields.
            rec = (
                schema.episode_record(ev)
                if isinstance(ev, Episode)
                else schema.open_episode_record(ev)
            )
            kind = str(rec.pop("kind"))
            fields = {k: _line_value(v) for k, v in rec.items()}
            fields["open"] = isinstance(ev, EpisodeStart)
            out.append(line("episode", {**base, "kind": kind}, fields, to_ns(ev.onset)))
        elif isinstance(ev, QualityChange):
            continue  # quality is stored per second with the feature rows
    return [x for x in out if x is not None]
