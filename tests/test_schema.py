"""The one output schema: every sink (CSV table, DataFrame, InfluxDB line, MQTT payload) renders
its records with the same field names and values, and the docs are generated from it."""

from __future__ import annotations

import json
import math

import pytest

from rekindle.analysis import schema
from rekindle.analysis.core import Episode, EpisodeStart, FeatureRow
from rekindle.analysis.offline import AnalysisResult, run_pipeline
from rekindle.analysis.points import event_lines
from rekindle.analysis.service import episode_payload, feature_payload
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.conftest import REPO

VALUES = [f.name for f in schema.FEATURE_VALUES]


@pytest.fixture(scope="module")
def sim() -> AnalysisResult:
    return run_pipeline(simulate(SimulationScript(), seed=3), "sim")


def _fields(line: str) -> tuple[str, dict[str, str]]:
    """Measurement and fields of a line-protocol line (quoted strings may hold commas)."""
    head, rest = line.split(" ", 1)
    body = rest.rsplit(" ", 1)[0]
    fields: dict[str, str] = {}
    key, buf, quoted = "", "", False
    for ch in body + ",":
        if ch == '"':
            quoted = not quoted
        if ch == "=" and not quoted and not key:
            key, buf = buf, ""
        elif ch == "," and not quoted:
            fields[key], key, buf = buf, "", ""
        else:
            buf += ch
    return head.split(",", 1)[0], fields


def _number(text: str) -> float | int | bool | str:
    if text in {"true", "false"}:
        return text == "true"
    if text.endswith("i"):
        return int(text[:-1])
    if text.startswith('"'):
        return text[1:-1]
    return float(text)


def test_features_render_the_same_record_everywhere(sim: AnalysisResult) -> None:
    rows = sim.features
    table = schema.feature_table(rows)
    assert table.columns == schema.feature_columns(rows)
    assert table.columns[: 2 + len(VALUES)] == ["time", *VALUES, "quality"]
    frame = schema.features_frame(rows)
    assert list(frame.columns) == table.columns
    checked = 0
    for row, cells in zip(rows, table.rows, strict=True):
        rec = schema.feature_record(row)
        assert dict(zip(table.columns, cells, strict=True)) == {
            c: schema.cell(rec.get(c)) for c in table.columns
        }
        values = schema.feature_values(row)
        assert list(values) == VALUES
        # MQTT: t, the values, contributions, quality
        payload = json.loads(json.dumps(feature_payload(row)))
        assert list(payload) == ["v", "t", *VALUES, "contributions", "quality"]
        assert payload["t"] == row.time
        assert {k: payload[k] for k in VALUES} == values
        # InfluxDB: the values present, streams, contrib_<input>; quality per stream
        lines = event_lines("s", "s", [row])
        measurement, fields = _fields(lines[0])
        assert measurement == "features"
        present = [k for k in VALUES if values[k] is not None]
        contrib = [f"contrib_{k}" for k in sorted(row.contributions)]
        assert list(fields) == [*present, "streams", *contrib]
        for k in present:
            assert _number(fields[k]) == values[k]
        for k in contrib:
            assert _number(fields[k]) == rec[k]
        quality = [_fields(ln) for ln in lines[1:]]
        assert [m for m, _ in quality] == ["quality"] * len(row.quality)
        assert [_number(f["state"]) for _, f in quality] == [
            row.quality[s] for s in sorted(row.quality)
        ]
        checked += row.arousal_index is not None
    assert checked > 1000


def test_episodes_render_the_same_record_everywhere(sim: AnalysisResult) -> None:
    names = [f.name for f in schema.EPISODE_FIELDS]
    table = schema.episode_table(sim.episodes)
    assert table.columns == names
    assert list(schema.episodes_frame(sim.episodes).columns) == names
    assert {e.kind for e in sim.episodes} == {"arousal", "release"}
    for ep, cells in zip(sim.episodes, table.rows, strict=True):
        rec = schema.episode_record(ep)
        assert list(rec) == names
        assert cells == [schema.cell(v) for v in rec.values()]
        payload = json.loads(json.dumps(episode_payload("s", "x", ep)))
        assert list(payload) == ["v", "site", "session", "state", *names]
        assert payload["state"] == "closed"
        assert payload["signals"] == list(ep.signals)
        assert {k: payload[k] for k in names if k != "signals"} == {
            k: v for k, v in rec.items() if k != "signals"
        }
        (line,) = event_lines("s", "x", [ep])
        assert f"kind={ep.kind}" in line.split(" ")[0]
        _, fields = _fields(line)
        present = [k for k in names[1:] if rec[k] is not None]
        assert list(fields) == [*present, "open"]
        assert _number(fields["signals"]) == ",".join(ep.signals)
        assert _number(fields["duration_s"]) == ep.offset - ep.onset
    start = EpisodeStart("arousal", 1.0e9, 1.0e9 + 30.0, 61.5)
    payload = episode_payload("s", "x", start)
    assert list(payload) == ["v", "site", "session", "state", *schema.EPISODE_OPEN_FIELDS]
    assert payload["state"] == "open"
    (line,) = event_lines("s", "x", [start])
    assert list(_fields(line)[1]) == [*schema.EPISODE_OPEN_FIELDS[1:], "open"]


def test_docs_outputs_is_generated_from_the_schema() -> None:
    doc = (REPO / "docs" / "outputs.md").read_text(encoding="utf-8")
    assert doc == schema.markdown(), (
        "docs/outputs.md is out of date: python -m rekindle.analysis.schema > docs/outputs.md"
    )


def test_storage_doc_names_every_field_of_the_points() -> None:
    doc = (REPO / "docs" / "storage.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(" `"): line for line in doc.splitlines() if line.startswith("| `")
    }
    for name in [*VALUES, "contrib_<input>", "streams"]:
        assert f"`{name}`" in rows["features"], name
    for f in schema.EPISODE_FIELDS[1:]:
        assert f"`{f.name}`" in rows["episode"], f.name
    for f in schema.QUALITY_FIELDS[2:]:
        assert f"`{f.name}`" in rows["quality"], f.name
    for f in schema.GAP_FIELDS[1:]:
        assert f"`{f.name}`" in rows["gap"], f.name


def test_empty_outputs_keep_their_columns_and_types() -> None:
    features = schema.features_frame([])
    assert list(features.columns) == schema.feature_columns([])
    episodes = schema.episodes_frame([])
    assert list(episodes.columns) == [f.name for f in schema.EPISODE_FIELDS]
    assert episodes["kind"].dtype == object
    assert episodes["onset"].dtype == "float64"
    markers = schema.markers_frame([(1.0e9, "tears")])
    assert markers.to_dict("records") == [{"time": 1.0e9, "text": "tears"}]


def test_a_row_without_values_still_has_every_column() -> None:
    row = FeatureRow(1.0e9, None, None, None, None, None, None, {}, {})
    (cells,) = schema.feature_table([row]).rows
    assert cells[0] == 1.0e9
    assert all(c is None for c in cells[1:])
    assert math.isnan(float(schema.features_frame([row])["hr"][0]))
    assert Episode("arousal", 1.0, 2.0, 3.0, 50.0, ("eda",)).confirmed is None
