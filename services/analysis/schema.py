"""One output schema for every sink: field names, types, units and descriptions of the features,
episodes, quality and markers, and the one function per record kind that turns an analysis event
into a flat mapping (pure: no I/O).

The InfluxDB points (:mod:`rekindle.analysis.points`), the MQTT payloads
(:mod:`rekindle.analysis.service`), the CSV/Parquet tables (:mod:`rekindle.analysis.offline`), the
reports and the DataFrames (:func:`features_frame`, :func:`episodes_frame`) all render the records
built here, so a field is added in one place. Feature fields of registered detectors
(:mod:`rekindle.analysis.core.extensions`) are part of the schema as soon as they are registered.
``docs/outputs.md`` is generated from it (:func:`markdown`; a test keeps the two equal).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from rekindle.analysis.core import Episode, EpisodeStart, FeatureRow
from rekindle.analysis.core.extensions import registered
from rekindle.analysis.intervals import metric_columns

if TYPE_CHECKING:
    import pandas as pd

FieldType: TypeAlias = Literal["float", "int", "text", "bool", "list"]
Cell: TypeAlias = float | str | None


@dataclass(frozen=True, slots=True)
class Field:
    """One named field of a record: ``type`` as the tables hold it (``list`` = text items, joined
    by commas in CSV and InfluxDB, a JSON array on MQTT), ``unit`` empty when it has none."""

    name: str
    type: FieldType
    unit: str
    description: str


# --- features ------------------------------------------------------------------------------------
#: The 1-Hz feature row's time (the ``t`` of the MQTT payload, the point time in InfluxDB).
FEATURE_TIME = Field(
    "time", "float", "unix s", "end of the feature second: the row summarises samples with t < time"
)
#: The built-in per-second values of a feature row, in output order.
FEATURE_VALUES: tuple[Field, ...] = (
    Field(
        "hr", "float", "bpm", "heart rate: the device's HR averaged over hr_window_s, else from RR"
    ),
    Field("rmssd", "float", "ms", "RMSSD of the accepted RR intervals over rmssd_window_s"),
    Field("eda_tonic", "float", "µS", "tonic EDA (causal low-pass at eda_tonic_hz)"),
    Field("eda_phasic", "float", "µS", "phasic EDA (cleaned EDA minus tonic)"),
    Field("scr_rate", "float", "1/min", "skin-conductance responses over scr_rate_window_s"),
    Field(
        "arousal_index",
        "float",
        "0-100",
        "change index; absent during the warm-up and while the EDA that leads it is lost",
    ),
)
#: The worst stream's state (CSV/DataFrame only).
FEATURE_QUALITY = Field("quality", "text", "", "the worst stream's quality this second")
#: Per-stream and per-input columns: ``<prefix>_<key>``.
QUALITY_PREFIX = "quality"
CONTRIB_PREFIX = "contrib"
FEATURE_PATTERNS: tuple[Field, ...] = (
    Field(
        "quality_<stream>",
        "text",
        "",
        "good / degraded / lost; empty before the stream is first seen",
    ),
    Field(
        "contrib_<input>",
        "float",
        "index points",
        "points each input contributed to arousal_index (they sum to it)",
    ),
)
#: Streams in the order their per-stream columns appear; other keys follow alphabetically.
STREAM_ORDER = ("eda", "hr", "rr", "acc", "ppg", "ecg", "temp")
#: Keys that always get a column, so that every recording's table has the same columns.
ALWAYS_QUALITY = ("eda", "hr", "rr", "acc")
ALWAYS_CONTRIB = ("eda", "hr", "rmssd")
#: Quality states, worst first, and their numeric codes (InfluxDB ``quality.code``).
QUALITY_CODES: Mapping[str, int] = {"good": 2, "degraded": 1, "lost": 0}


def extension_fields() -> tuple[Field, ...]:
    """The feature fields of the registered detectors, in registration order."""
    return tuple(
        Field(f.name, "float", f.unit, f"{f.description} ({spec.name} detector)")
        for spec in registered()
        for f in spec.fields
    )


def feature_fields() -> tuple[Field, ...]:
    """Every per-second value of a feature row: the built-in ones, then the registered ones."""
    return FEATURE_VALUES + extension_fields()


def feature_values(row: FeatureRow) -> dict[str, float | None]:
    """The per-second values of ``row`` by field name, in schema order (None = not available).

    The one conversion of a :class:`FeatureRow` that every sink uses."""
    out: dict[str, float | None] = {
        "hr": row.hr,
        "rmssd": row.rmssd,
        "eda_tonic": row.eda_tonic,
        "eda_phasic": row.eda_phasic,
        "scr_rate": row.scr_rate,
        "arousal_index": row.arousal_index,
    }
    if row.extra:
        out.update(row.extra)
    return out


def overall_quality(row: FeatureRow) -> str:
    """The worst state among the row's streams ("" when none was seen)."""
    if not row.quality:
        return ""
    return min(row.quality.values(), key=lambda s: QUALITY_CODES.get(s, 0))


def contrib_fields(row: FeatureRow) -> dict[str, float]:
    """``contrib_<input>`` -> index points, sorted by input name."""
    return {f"{CONTRIB_PREFIX}_{k}": float(v) for k, v in sorted(row.contributions.items())}


def feature_record(row: FeatureRow) -> dict[str, object]:
    """``row`` as one flat mapping: ``time``, the values, ``quality`` (the worst stream),
    ``quality_<stream>`` and ``contrib_<input>`` (only the keys the row has)."""
    rec: dict[str, object] = {"time": row.time}
    rec.update(feature_values(row))
    rec["quality"] = overall_quality(row) or None
    for stream, state in row.quality.items():
        rec[f"{QUALITY_PREFIX}_{stream}"] = state
    for name, points in row.contributions.items():
        rec[f"{CONTRIB_PREFIX}_{name}"] = float(points)
    return rec


def key_order(key: str) -> tuple[int, str]:
    return (STREAM_ORDER.index(key) if key in STREAM_ORDER else len(STREAM_ORDER), key)


def feature_columns(rows: Sequence[FeatureRow]) -> list[str]:
    """The columns of a features table: ``time``, the values (the built-in ones, the registered
    detectors', then any other field the rows hold), ``quality``, ``quality_<stream>``
    (always eda, hr, rr, acc; then any other stream seen) and ``contrib_<input>`` (always eda, hr,
    rmssd; then any other input seen)."""
    streams: set[str] = set(ALWAYS_QUALITY)
    inputs: set[str] = set(ALWAYS_CONTRIB)
    values = dict.fromkeys(f.name for f in feature_fields())
    for r in rows:
        streams.update(r.quality)
        inputs.update(r.contributions)
        if r.extra:  # (also the fields of a detector unregistered since the rows were made)
            values.update(dict.fromkeys(r.extra))
    return [
        FEATURE_TIME.name,
        *values,
        FEATURE_QUALITY.name,
        *(f"{QUALITY_PREFIX}_{s}" for s in sorted(streams, key=key_order)),
        *(f"{CONTRIB_PREFIX}_{k}" for k in sorted(inputs, key=key_order)),
    ]


# --- episodes ------------------------------------------------------------------------------------
EPISODE_FIELDS: tuple[Field, ...] = (
    Field("kind", "text", "", "arousal or release (an InfluxDB tag)"),
    Field(
        "onset",
        "float",
        "unix s",
        "arousal: where its rise began (set back retrospectively); release: its surge's onset",
    ),
    Field("peak", "float", "unix s", "when the index peaked (release: the surge's peak)"),
    Field("offset", "float", "unix s", "arousal: its end; release: when recovery was confirmed"),
    Field("peak_index", "float", "0-100", "the index at the peak"),
    Field("duration_s", "float", "s", "offset - onset"),
    Field("signals", "list", "", "inputs that rose (arousal) or recovered (release)"),
    Field(
        "recovery_depth",
        "float",
        "",
        "release: share of the surge's HR rise given back (1 = back at the reference)",
    ),
    Field("recovery_latency_s", "float", "s", "release: surge peak until recovery was first met"),
    Field(
        "confirmed",
        "float",
        "unix s",
        "when the episode was declared (the alert time; a release's equals its offset)",
    ),
)
#: The fields of an episode that is still open (MQTT ``state: open``, InfluxDB ``open=true``).
EPISODE_OPEN_FIELDS: tuple[str, ...] = ("kind", "onset", "confirmed", "peak_index")


def episode_record(ep: Episode) -> dict[str, object]:
    """``ep`` as one flat mapping in :data:`EPISODE_FIELDS` order (``signals`` a tuple)."""
    return {
        "kind": ep.kind,
        "onset": ep.onset,
        "peak": ep.peak,
        "offset": ep.offset,
        "peak_index": ep.peak_index,
        "duration_s": ep.offset - ep.onset,
        "signals": ep.signals,
        "recovery_depth": ep.recovery_depth,
        "recovery_latency_s": ep.recovery_latency,
        "confirmed": ep.confirmed,
    }


def open_episode_record(ev: EpisodeStart) -> dict[str, object]:
    """An open (confirmed, not yet closed) episode: :data:`EPISODE_OPEN_FIELDS`."""
    return {
        "kind": ev.kind,
        "onset": ev.onset,
        "confirmed": ev.confirmed,
        "peak_index": ev.peak_index,
    }


# --- quality, markers, segments --------------------------------------------------------------
QUALITY_FIELDS: tuple[Field, ...] = (
    Field("time", "float", "unix s", "the feature second"),
    Field("stream", "text", "", "the stream (an InfluxDB tag)"),
    Field("state", "text", "", "good / degraded / lost"),
    Field("code", "int", "", "2 / 1 / 0 (good / degraded / lost), for plotting"),
)


def quality_record(time: float, stream: str, state: str) -> dict[str, object]:
    return {"time": time, "stream": stream, "state": state, "code": QUALITY_CODES.get(state, 0)}


MARKER_FIELDS: tuple[Field, ...] = (
    Field("time", "float", "unix s", "when the marker was set"),
    Field("text", "text", "", "the marker's text (e.g. 'tears', an E4 button tag)"),
)


def marker_record(time: float, text: str) -> dict[str, object]:
    return {"time": time, "text": text}


SEGMENT_FIELDS: tuple[Field, ...] = (
    Field("kind", "text", "", "segment (between markers) or phase (from --phases)"),
    Field("label", "text", "", "the marker that opens the segment, or the phase's label"),
    Field("start", "float", "unix s", "start"),
    Field("end", "float", "unix s", "end"),
    Field("duration_s", "float", "s", "end - start"),
)


GAP_FIELDS: tuple[Field, ...] = (
    Field("stream", "text", "", "the stream whose data is missing (an InfluxDB tag)"),
    Field("start", "float", "unix s", "start of the missing data"),
    Field("end", "float", "unix s", "end of the missing data"),
    Field("duration_s", "float", "s", "end - start"),
    Field("messages", "int", "", "seq gaps: the messages that never came"),
    Field("first_seq", "int", "", "seq gaps: the first missing seq"),
    Field("last_seq", "int", "", "seq gaps: the last missing seq"),
)


def gap_record(
    start: float,
    end: float,
    *,
    messages: int | None = None,
    first_seq: int | None = None,
    last_seq: int | None = None,
) -> dict[str, float | int | None]:
    """A gap (``stream`` is a tag and stays out): a gap message's span, or an unrepaired seq
    gap with its message count and seq range."""
    rec: dict[str, float | int | None] = {"start": start, "end": end, "duration_s": end - start}
    if messages is not None:
        rec.update(messages=messages, first_seq=first_seq, last_seq=last_seq)
    return rec


# --- tables ----------------------------------------------------------------------------------
def cell(value: object) -> Cell:
    """One value as a table cell: numbers as float, tuples joined by commas, None kept."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass(slots=True)
class Table:
    """Named columns and their rows: the CSV, the Parquet, the DataFrames and the reports."""

    columns: list[str]
    rows: list[list[Cell]]

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def feature_table(rows: Sequence[FeatureRow]) -> Table:
    """``features.csv``: :func:`feature_columns`, one row per :func:`feature_record`."""
    columns = feature_columns(rows)
    out: list[list[Cell]] = []
    for r in rows:
        rec = feature_record(r)
        out.append([cell(rec.get(c)) for c in columns])
    return Table(columns, out)


def episode_table(
    episodes: Sequence[Episode], metrics: Sequence[Mapping[str, float | str]] | None = None
) -> Table:
    """``episodes.csv``: :data:`EPISODE_FIELDS` (``signals`` joined by commas), then the
    episode's NeuroKit2 metrics (``nk_*``) when computed."""
    extra = metric_columns(metrics or [])
    columns = [f.name for f in EPISODE_FIELDS] + extra
    out: list[list[Cell]] = []
    for i, ep in enumerate(episodes):
        rec = episode_record(ep)
        m = metrics[i] if metrics else {}
        out.append([cell(v) for v in rec.values()] + [cell(m.get(c)) for c in extra])
    return Table(columns, out)


#: Columns that hold text whatever a table's rows hold (so that a recording without episodes,
#: or without HR, gets the same column types as any other): the schema's text and list fields,
#: ``quality_<stream>`` and NeuroKit2's ``nk_notes``.
TEXT_COLUMNS = frozenset(
    f.name
    for f in (FEATURE_QUALITY, *EPISODE_FIELDS, *QUALITY_FIELDS, *MARKER_FIELDS, *SEGMENT_FIELDS)
    if f.type in {"text", "list"}
) | {"nk_notes"}


def text_column(name: str, values: Iterable[Cell] = ()) -> bool:
    """Whether column ``name`` of a table holds text (else float64)."""
    return (
        name in TEXT_COLUMNS
        or name.startswith(f"{QUALITY_PREFIX}_")
        or any(isinstance(v, str) for v in values)
    )


def frame(table: Table) -> pd.DataFrame:
    """``table`` as a DataFrame with the CSV's columns: numeric columns float64 (NaN where the CSV
    is empty), text columns (:func:`text_column`) object (None where the CSV is empty), as the
    Parquet holds them."""
    import pandas as pd  # noqa: PLC0415 (only the API and Parquet need pandas)

    data: dict[str, object] = {}
    for i, name in enumerate(table.columns):
        values = [r[i] for r in table.rows]
        if text_column(name, values):
            data[name] = pd.Series([None if v is None else str(v) for v in values], dtype=object)
        else:
            data[name] = pd.Series(
                [math.nan if v is None else float(v) for v in values], dtype="float64"
            )
    return pd.DataFrame(data, columns=table.columns)


def features_frame(rows: Sequence[FeatureRow]) -> pd.DataFrame:
    """The feature rows as a DataFrame with exactly the columns of ``features.csv``."""
    return frame(feature_table(rows))


def episodes_frame(
    episodes: Sequence[Episode], metrics: Sequence[Mapping[str, float | str]] | None = None
) -> pd.DataFrame:
    """The episodes as a DataFrame with exactly the columns of ``episodes.csv``."""
    return frame(episode_table(episodes, metrics))


def markers_frame(markers: Iterable[tuple[float, str]]) -> pd.DataFrame:
    """Markers as a DataFrame: ``time`` (unix s), ``text``."""
    rows: list[list[Cell]] = [[float(t), str(s)] for t, s in markers]
    table = Table([f.name for f in MARKER_FIELDS], rows)
    out = frame(table)
    if not rows:
        out = out.astype({"time": "float64", "text": object})
    return out


# --- the generated documentation (docs/outputs.md) -------------------------------------------
#: Where each record kind goes, per sink (the field names are the schema's unless listed).
SINKS: Mapping[str, str] = {
    "features": (
        "`features.csv` / `features.parquet` / `features_frame()`: one row per second, every "
        "field below as a column. InfluxDB: measurement `features` (tags site, session; the "
        "point time is `time`), the values and `contrib_<input>` as fields, plus `streams` (the "
        "number of streams not lost) and `ended` (docs/storage.md); the per-stream quality is "
        "the `quality` measurement. MQTT `out/features`: `t` (= `time`), the values, "
        "`contributions` (`{input: points}`) and `quality` (`{stream: state}`)."
    ),
    "episode": (
        "`episodes.csv` / `episodes.parquet` / `episodes_frame()` (then NeuroKit2's `nk_*` "
        "metrics with `--metrics`). InfluxDB: measurement `episode` (tags site, session, kind; "
        "point time `onset`), the other fields plus `open` (true while an arousal episode is "
        "confirmed but not closed: only the open fields are written then). MQTT `out/episode`: "
        '`state` `"open"` with the open fields, then `"closed"` with every field (`signals` '
        "as an array). The live service's NeuroKit2 metrics of each closed episode: measurement "
        "`episode_metrics` (tags site, session, kind; fields `onset`, `offset`, `duration_s`, "
        "the `nk_*` metrics; point time `onset`; docs/storage.md)."
    ),
    "quality": (
        "InfluxDB: measurement `quality` every second (tag stream; fields state, code). CSV: "
        "`quality_<stream>` columns of `features.csv`. MQTT `out/quality`: `t`, `stream`, "
        "`state` when a stream's state changes."
    ),
    "marker": (
        "InfluxDB: measurement `marker` (tag device; field text). `summary.json` `markers`, "
        "`markers_frame()`, the reports."
    ),
    "segment": (
        "`segments.csv` (with `--metrics`, then NeuroKit2's `nk_*` metrics), the reports. "
        "InfluxDB (the live service, as the data passes each marker): measurement "
        "`segment_metrics` (tags site, session, kind; the other fields and the `nk_*` metrics; "
        "point time `start`)."
    ),
    "gap": (
        "InfluxDB: measurement `gap` (tags site, session, device, stream; `source=seq` for an "
        "unrepaired seq gap; point time `start`), from gap messages and from seq gaps the "
        "analysis service gave up on (docs/wire-contract.md); the session summary counts them."
    ),
}


def _rows(fields: Iterable[Field]) -> list[str]:
    return [f"| `{f.name}` | {f.type} | {f.unit or '-'} | {f.description} |" for f in fields]


def markdown() -> str:
    """``docs/outputs.md``: every record kind's fields and where they go (built-in fields; the
    registered detectors' fields are listed when any is registered)."""
    head = ["| field | type | unit | meaning |", "|---|---|---|---|"]
    parts = [
        "# Outputs",
        "",
        "Generated from `rekindle/analysis/schema.py` (`python -m rekindle.analysis.schema > "
        "docs/outputs.md`; a test keeps the two equal). Every sink renders the same records: a "
        "field has one name, type and unit in the CSV and Parquet tables, the DataFrames of the "
        "Python API, the InfluxDB points and the MQTT payloads. Times are unix seconds; a "
        "missing value is an empty CSV cell, NaN/None in a DataFrame, an absent InfluxDB field "
        "and `null` on MQTT. `list` fields are joined by commas, except on MQTT (an array).",
        "",
        "## Features (1 Hz)",
        "",
        SINKS["features"],
        "",
        *head,
        *_rows((FEATURE_TIME, *feature_fields(), FEATURE_QUALITY, *FEATURE_PATTERNS)),
        "",
        "`quality_<stream>` columns always exist for "
        + ", ".join(ALWAYS_QUALITY)
        + "; `contrib_<input>` for "
        + ", ".join(ALWAYS_CONTRIB)
        + ". A registered detector's fields (docs/extending.md) follow `arousal_index`.",
        "",
        "## Episodes",
        "",
        SINKS["episode"],
        "Open fields: " + ", ".join(f"`{n}`" for n in EPISODE_OPEN_FIELDS) + ".",
        "",
        *head,
        *_rows(EPISODE_FIELDS),
        "",
        "## Quality",
        "",
        SINKS["quality"],
        "",
        *head,
        *_rows(QUALITY_FIELDS),
        "",
        "## Markers",
        "",
        SINKS["marker"],
        "",
        *head,
        *_rows(MARKER_FIELDS),
        "",
        "## Segments",
        "",
        SINKS["segment"],
        "",
        *head,
        *_rows(SEGMENT_FIELDS),
        "",
        "## Gaps",
        "",
        SINKS["gap"],
        "",
        *head,
        *_rows(GAP_FIELDS),
    ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown())
